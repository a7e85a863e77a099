"""Event-hash vectors for nearfab's own EPCIS export, made by the reference generator.

The reference is the event-hash generator of the EPCIS/CBV 2.0 authors
(github.com/RalphTro/epcis-event-hash-generator, MIT), as published on PyPI as
`epcis-event-hash-generator`. It is not a nearfab dependency: run this script from a virtual
environment that has it, e.g.

    python -m venv /tmp/ehg && /tmp/ehg/bin/pip install epcis-event-hash-generator==1.9.3
    /tmp/ehg/bin/python scripts/epcis_reference_vectors.py EXPORT.json \
        tests/conformance/data/epcis-reference/nearfab-export

EXPORT.json is an EPCISDocument exported by nearfab (`EpcisService.export`). The script copies
it to `<out>.jsonld` and writes what the reference computes for it: `<out>.hashes` (one event ID
per line, in document order) and `<out>.prehashes` (the pre-hash strings, `---` between them),
the same layout as the generator's own test vectors. It never reads nearfab's IDs.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib.metadata import version
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__)
        return 2
    from epcis_event_hash_generator import events_from_file_reader, hash_generator

    source, out = Path(argv[1]), Path(argv[2])
    json.loads(source.read_text())  # must be JSON
    target = out.with_suffix(".jsonld")
    shutil.copyfile(source, target)
    events = events_from_file_reader.event_list_from_file(str(target))
    prehashes = hash_generator.derive_prehashes_from_events(events, "")
    hashes = hash_generator.calculate_hashes_from_pre_hashes(prehashes, "sha256")
    out.with_suffix(".hashes").write_text("\n".join(hashes) + "\n")
    out.with_suffix(".prehashes").write_text("\n---\n".join(prehashes) + "\n")
    print(
        f"epcis-event-hash-generator {version('epcis-event-hash-generator')}: {len(hashes)} events"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
