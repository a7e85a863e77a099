"""The product hashes passwords at full cost; only the tests use a cheap hasher.

tests/conftest.py (`cheap_argon2`) swaps in argon2id at its lowest cost for the whole test
session (hundreds of logins and signatures). These tests read the hasher the product had before
that swap and check it against the OWASP Password Storage Cheat Sheet's minimum for argon2id
(m = 19 MiB, t = 2, p = 1), from the parameters encoded in a hash it makes.
"""

from __future__ import annotations

import argon2
from argon2 import PasswordHasher

import nearfab.identity.services.users as users

OWASP_MIN_MEMORY_KIB = 19 * 1024
OWASP_MIN_TIME_COST = 2


def test_the_product_hashes_with_argon2id_at_least_at_the_owasp_minimum(
    product_password_hasher: PasswordHasher,
) -> None:
    encoded = product_password_hasher.hash("correct-horse-42")
    params = argon2.extract_parameters(encoded)
    assert encoded.startswith("$argon2id$")
    assert params.type is argon2.Type.ID
    assert params.memory_cost >= OWASP_MIN_MEMORY_KIB
    assert params.time_cost >= OWASP_MIN_TIME_COST
    assert params.parallelism >= 1
    assert product_password_hasher.verify(encoded, "correct-horse-42")


def test_only_the_test_session_uses_the_cheap_hasher(
    product_password_hasher: PasswordHasher,
) -> None:
    assert users._hasher is not product_password_hasher
    cheap = argon2.extract_parameters(users._hasher.hash("x"))
    assert (cheap.memory_cost, cheap.time_cost) == (64, 1)
