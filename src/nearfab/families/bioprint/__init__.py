"""bioprint: bioprinted islet-like micro-tissues for type 1 diabetes (issue 16).

Registered by bootstrap.product_families(); one module per part of the family kit
(docs/bioprint.md); ISBT 128 from the shared families/isbt128/.
"""

from nearfab.families.bioprint.family import BioprintFamily

__all__ = ["BioprintFamily"]
