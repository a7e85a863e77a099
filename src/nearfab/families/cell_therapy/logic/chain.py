"""The chain of identity of an autologous product, ISBT 128 (pure, no I/O).

The patient's collection is named by its Donation Identification Number (DIN, ICCBBA ST-001
§2.4.1). The DIN rules (the DIN at collection, a DIN at a hand-over) are shared with every
family whose starting material carries a DIN: families/isbt128/chain.py (`collection_din`,
`din_mismatch`, imported here). This module keeps what is cell therapy's own: the records
before the collection and the business step of each hand-over.
"""

from __future__ import annotations

from nearfab.families.isbt128.chain import collection_din, din_mismatch

__all__ = ["HAND_OVER_BIZ_STEPS", "PRE_COLLECTION_RECORDS", "collection_din", "din_mismatch"]

# the pre-collection records the family requires of every order before its collection: the
# patient's eligibility for collection (donor eligibility, 21 CFR 1271 subpart C; autologous
# use is exempt from the determination but the eligibility of the patient for apheresis is
# confirmed by the clinician) and the patient's informed consent
PRE_COLLECTION_RECORDS = ("eligibility", "consent")
# what each hand-over of the chain is in GS1 CBV 2.0 business steps (the EPCIS event custody
# records): the micro-factory receives the collection, the cryostore stores the product, the
# bag is picked from the cryostore for the patient's infusion
HAND_OVER_BIZ_STEPS = {
    "micro_factory": "receiving",
    "cryostore": "storing",
    "infusion": "picking",
}
