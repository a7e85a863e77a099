#!/usr/bin/env python3
"""Copy the standard files nearfab validates against at run time into the package.

The product must not read files outside its own package at run time, so the official files it
checks documents against ship in ``src/nearfab/custody/standards/``. They come from the shared
test material (``../shared/data/standards/``), whose ``MANIFEST.tsv`` names each file's origin
(repository@commit), licence, size and sha256. This script copies the files listed in
``VENDORED`` below, refuses any whose size or sha256 does not match the manifest, and writes
``SOURCES.tsv`` beside them (the manifest rows of what was copied).

    python scripts/vendor_standards.py            # copy (or refresh) the files
    python scripts/vendor_standards.py --check    # only compare; exit 1 on any difference

``--shared DIR`` (or ``NEARFAB_SHARED_DATA``) points at another copy of the shared data.
tests/custody/test_vendored_standards.py checks the shipped copies against the shared ones.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "src" / "nearfab" / "custody" / "standards"

# shared path (relative to standards/)  ->  path inside the package's standards/ folder
VENDORED = {
    "epcis/EPCIS-JSON-Schema.json": "epcis/EPCIS-JSON-Schema.json",
    "epcis/epcis-context.jsonld": "epcis/epcis-context.jsonld",
    "epcis/LICENSE": "epcis/LICENSE",
    "epcis/Disclaimer": "epcis/Disclaimer",
}
MANIFEST_FIELDS = ("local_path", "origin_repo@commit", "origin_path", "license", "bytes", "sha256")


def default_shared() -> Path:
    env = os.environ.get("NEARFAB_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(standards: Path) -> dict[str, dict[str, str]]:
    with (standards / "MANIFEST.tsv").open(encoding="utf-8", newline="") as fh:
        return {row["local_path"]: row for row in csv.DictReader(fh, delimiter="\t")}


def plan(shared: Path) -> list[tuple[Path, Path, dict[str, str]]]:
    """(source, destination, manifest row) for each vendored file; raises on a mismatch."""
    standards = shared / "standards"
    manifest = read_manifest(standards)
    out = []
    for src_rel, dst_rel in VENDORED.items():
        row = manifest.get(src_rel)
        if row is None:
            raise SystemExit(f"{src_rel}: not listed in {standards / 'MANIFEST.tsv'}")
        src = standards / src_rel
        if not src.is_file():
            raise SystemExit(f"{src}: missing")
        size, digest = src.stat().st_size, sha256(src)
        if str(size) != row["bytes"] or digest != row["sha256"]:
            raise SystemExit(
                f"{src}: {size} bytes, sha256 {digest}; MANIFEST.tsv says "
                f"{row['bytes']} bytes, sha256 {row['sha256']}"
            )
        out.append((src, TARGET / dst_rel, row))
    return out


def sources_tsv(rows: list[dict[str, str]]) -> str:
    lines = ["\t".join(MANIFEST_FIELDS)]
    lines += ["\t".join(row[f] for f in MANIFEST_FIELDS) for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=None, help="the shared data folder")
    parser.add_argument("--check", action="store_true", help="compare only, copy nothing")
    args = parser.parse_args(argv)
    shared = args.shared or default_shared()
    if not (shared / "standards" / "MANIFEST.tsv").is_file():
        print(f"no shared data at {shared} (standards/MANIFEST.tsv)", file=sys.stderr)
        return 2
    todo = plan(shared)
    sources = sources_tsv([row for _, _, row in todo])
    if args.check:
        stale = [
            str(dst) for _, dst, row in todo if not dst.is_file() or sha256(dst) != row["sha256"]
        ]
        listing = TARGET / "SOURCES.tsv"
        if not listing.is_file() or listing.read_text(encoding="utf-8") != sources:
            stale.append(str(listing))
        for path in stale:
            print(f"differs from the shared data: {path}", file=sys.stderr)
        return 1 if stale else 0
    for src, dst, _ in todo:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        print(f"{src} -> {dst.relative_to(REPO)}")
    (TARGET / "SOURCES.tsv").write_text(sources, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
