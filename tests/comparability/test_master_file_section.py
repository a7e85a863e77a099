"""The master file's comparability section: equivalence margins for the per-unit measurement
(as % of target) or a process parameter, validated with the field named; part of the content
the QP signs only when present (earlier approvals keep their hash)."""

from __future__ import annotations

from typing import Any

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import ValidationFailed

seeded = fh.seeded


def _draft(app: App, **changes: Any) -> Any:
    with app.uow() as uow:
        data = app.master_files.list_all(uow)[0].content()
    data.pop("version")
    data.update(changes)
    with app.uow() as uow:
        return app.master_files.draft(uow, fh.actor(app, "qp"), data)


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ({"margins": {"no_such_parameter": 1.0}}, "no_such_parameter"),
        ({"margins": {"measurement_pct": 0}}, "above 0"),
        ({"margins": {}}, "at least 1"),
        ({"margins": {"measurement_pct": 2}, "alpha": 0.7}, "alpha"),
        ({"margins": {"measurement_pct": 2}, "unknown": 1}, "unknown"),
    ],
)
def test_a_bad_section_is_refused_naming_the_field(
    seeded: App, section: dict[str, Any], said: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        _draft(seeded, comparability=section)
    assert caught.value.field.startswith("master_file.comparability"), caught.value.field
    assert said in caught.value.message


def test_the_section_is_stored_and_signed_only_when_present(seeded: App) -> None:
    with seeded.uow() as uow:
        mf = seeded.master_files.list_all(uow)[0]
        assert "comparability" not in mf.content()  # approved before the section existed
        cpp = sorted(mf.process_parameters)[0]
    made = _draft(seeded, comparability={"margins": {"measurement_pct": 2.5, cpp: 1.0}})
    assert made.comparability == {
        "margins": {"measurement_pct": 2.5, cpp: 1.0},
        "alpha": 0.05,
        "min_cpk": 1.33,
    }
    assert made.content()["comparability"] == made.comparability
