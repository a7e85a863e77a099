"""The standard files nearfab validates against at run time ship inside the package
(src/nearfab/custody/standards/, copied by scripts/vendor_standards.py), byte for byte GS1's.

The sha256 values are GS1's files' as recorded in the shared test material's MANIFEST.tsv
(origin gs1/EPCIS@2b888befbc07), not computed from the copies under test.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import tomllib
from pathlib import Path

import pytest

import nearfab
from nearfab.custody import EpcisStore, find_schema
from nearfab.custody.services.epcis import PACKAGED_STANDARDS

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(nearfab.__file__).resolve().parent
# GS1's EPCIS 2.0 JSON schema, as in ../shared/data/standards/MANIFEST.tsv
SCHEMA_SHA256 = "ed3228d7867198b4a5be9748fe77f473457c6ed98224fab28a950b4ce634a041"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["local_path"]: row for row in csv.DictReader(fh, delimiter="\t")}


SHIPPED = _rows(PACKAGED_STANDARDS / "SOURCES.tsv")


def test_the_schema_is_found_inside_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEARFAB_EPCIS_SCHEMA", raising=False)
    path = find_schema()
    assert path is not None
    assert path.resolve().is_relative_to(PACKAGE)
    assert _sha256(path) == SCHEMA_SHA256


def test_a_document_is_validated_with_no_file_outside_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NEARFAB_EPCIS_SCHEMA", raising=False)
    store = EpcisStore()
    bad = {"type": "EPCISDocument", "schemaVersion": "2.0"}  # no creationDate, no epcisBody
    assert {e["path"] for e in store.validate(bad)} == {"$"}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_file_has_its_recorded_size_and_sha256(name: str) -> None:
    path = PACKAGED_STANDARDS / name
    row = SHIPPED[name]
    assert path.stat().st_size == int(row["bytes"])
    assert _sha256(path) == row["sha256"]
    assert row["origin_repo@commit"] and row["license"]


def test_the_readme_names_source_and_licence_of_every_file() -> None:
    readme = (PACKAGED_STANDARDS / "README.md").read_text(encoding="utf-8")
    for name, row in SHIPPED.items():
        assert Path(name).name in readme
        assert row["origin_repo@commit"] in readme


def test_package_data_includes_the_shipped_files() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["nearfab"]
    for path in PACKAGED_STANDARDS.rglob("*"):
        if path.is_file():
            rel = path.relative_to(PACKAGE).as_posix()
            assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"


def test_shipped_copies_equal_the_shared_ones(shared_data: Path) -> None:
    """With ../shared/data present (always under CI): the copies are the shared files, and
    SOURCES.tsv repeats their MANIFEST.tsv rows."""
    manifest = _rows(shared_data / "standards" / "MANIFEST.tsv")
    assert SHIPPED, "nothing is shipped"
    for name, row in SHIPPED.items():
        assert manifest[name] == row
        assert _sha256(PACKAGED_STANDARDS / name) == _sha256(shared_data / "standards" / name)
