"""Designs: personalised designs per order, through product-family plug-ins."""

from nearfab.designs.registry import FamilyRegistry, ProductFamily
from nearfab.designs.services import DesignService

__all__ = ["DesignService", "FamilyRegistry", "ProductFamily"]
