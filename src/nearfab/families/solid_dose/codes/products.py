"""Product codes with their strength, extracted by scripts/extract_product_codes.py
from the source named in SOURCE (do not edit by hand: run the script)."""

from typing import Any

SOURCE: dict[str, Any] = {
    "name": "NLM VSAC value set Beta Blocker Therapy (2.16.840.1.113883.3.526.3.1174)",
    "repository": "github.com/cqframework/ecqm-content-qicore-2025",
    "commit": "db5a7e143304b19b70cbf6a89e5ebeab9e40df61",
    "path": "input/vocabulary/valueset/external/valueset-2.16.840.1.113883.3.526.3.1174.json",
    "licence": "CC0-1.0 (the repository); RxNorm content from the U.S. National Library of "
    "Medicine",
    "valueset_version": "20210303",
    "expansion_timestamp": "2025-06-20T16:59:18-04:00",
}

PRODUCTS: list[dict[str, Any]] = [
    {
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
        "code": "856448",
        "display": "propranolol hydrochloride 10 MG Oral Tablet",
        "kind": "RxNorm SCD",
        "ingredient": "propranolol hydrochloride",
        "strength_value": 10.0,
        "strength_unit": "mg",
        "per": "tablet",
        "code_system_version": "01022024",
    },
    {
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
        "code": "856457",
        "display": "propranolol hydrochloride 20 MG Oral Tablet",
        "kind": "RxNorm SCD",
        "ingredient": "propranolol hydrochloride",
        "strength_value": 20.0,
        "strength_unit": "mg",
        "per": "tablet",
        "code_system_version": "01022024",
    },
    {
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
        "code": "856519",
        "display": "propranolol hydrochloride 40 MG Oral Tablet",
        "kind": "RxNorm SCD",
        "ingredient": "propranolol hydrochloride",
        "strength_value": 40.0,
        "strength_unit": "mg",
        "per": "tablet",
        "code_system_version": "01022024",
    },
]
