"""One table per SV task (DESIGN §5 "Valuation", steps 1–3): its root, the commitment that
binds a validator to it, the check of a reveal, and the Shapley estimate it yields.

A validator evaluates ``U`` on the common schedule (``schedule.py``) and gets the *table*: the
list of ``U(mask)`` in schedule order, each an integer from 0 to ``game.max_utility(N)`` (N
validation samples times ``MARGIN_CAP``). Honest
validators get the same table, so it is named by its root:

    root = sha256("fedcoin/posap/table/v1" ‖ sv_task_id ‖ encode(table))

with ``encode`` the canonical msgpack encoding of the list of integers. A validator first
commits to its root without showing it,

    c = sha256("fedcoin/posap/commit/v1" ‖ sv_task_id ‖ validator_pubkey ‖ root ‖ salt)

with a fresh secret 32-byte salt, and later reveals the salt and the table (or just the root,
once a table with that root is recorded). The key in ``c`` makes a copied commitment useless
under another key, and the salt keeps the root hidden until the reveal: a lazy member that
waits to copy a root learns it only after the commit window has closed.

The estimate of a table is ``shapley.fixed_point_estimate`` over ``(mask, U)`` pairs: exact
rational arithmetic, ``floor(φ_i · SV_SCALE)``, the same integers on every node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fedcoin.consensus.shapley import fixed_point_estimate
from fedcoin.data.encoding import encode
from fedcoin.errors import (
    CommitmentMismatch,
    InvalidSalt,
    TableEntryOutOfRange,
    TableLengthMismatch,
)

TABLE_TAG = b"fedcoin/posap/table/v1"
"""Domain tag of a table root."""
COMMIT_TAG = b"fedcoin/posap/commit/v1"
"""Domain tag of a share commitment."""
SALT_BYTES = 32
"""Length of a commitment's secret salt."""
U32_MAX = 2**32 - 1
"""Table entries are u32 (``max_utility`` of the largest validation set is below 2^32)."""

Table = Sequence[int]


def table_root(sv_task_id: bytes, table: Table) -> bytes:
    """``sha256("fedcoin/posap/table/v1" ‖ sv_task_id ‖ encode(table))``."""
    return hashlib.sha256(TABLE_TAG + sv_task_id + encode(list(table))).digest()


def share_commitment(sv_task_id: bytes, validator_pubkey: bytes, root: bytes, salt: bytes) -> bytes:
    """``sha256("fedcoin/posap/commit/v1" ‖ sv_task_id ‖ validator_pubkey ‖ root ‖ salt)``."""
    # The salt is a fixed 32 bytes, so no two (root, salt) pairs share one preimage
    if len(salt) != SALT_BYTES:
        raise InvalidSalt(length=len(salt))
    return hashlib.sha256(COMMIT_TAG + sv_task_id + validator_pubkey + root + salt).digest()


def check_table(table: Table, length: int, max_entry: int) -> None:
    """A revealed table is well formed: one entry per schedule position, each a possible ``U``
    (``max_entry`` = ``game.max_utility`` of the validation set). Nothing is evaluated here
    (DESIGN §5 step 3)."""
    # The table must have one entry per schedule position
    if len(table) != length:
        raise TableLengthMismatch(expected=length, got=len(table))
    # Every entry must be a possible U: an integer from 0 to the game's maximum utility
    bound = min(max_entry, U32_MAX)
    for position, value in enumerate(table):
        if type(value) is not int or not 0 <= value <= bound:
            raise TableEntryOutOfRange(position=position, value=value, bound=bound)


def check_reveal(
    sv_task_id: bytes,
    validator_pubkey: bytes,
    commitment: bytes,
    salt: bytes,
    table: Table,
    length: int,
    max_entry: int,
) -> bytes:
    """Check a ``Share(sv_task_id, salt, table)`` against its member's recorded commitment;
    return the table's root. Cheapest check first: shape and range, then one hash of the table."""
    check_table(table, length, max_entry)
    root = table_root(sv_task_id, table)
    check_root_reveal(sv_task_id, validator_pubkey, commitment, salt, root)
    return root


def check_root_reveal(
    sv_task_id: bytes, validator_pubkey: bytes, commitment: bytes, salt: bytes, root: bytes
) -> None:
    """Check a reveal that names only a root (a table with that root is already recorded)."""
    # The reveal must recompute the member's commitment: same key, same root, same salt
    if share_commitment(sv_task_id, validator_pubkey, root, salt) != commitment:
        raise CommitmentMismatch(validator=validator_pubkey)


def first_difference(a: Table, b: Table) -> int | None:
    """The first schedule position where two tables differ; None if they are equal."""
    if len(a) != len(b):
        raise TableLengthMismatch(expected=len(a), got=len(b))
    for position, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return position
    return None


def table_estimate(
    n: int, schedule: Sequence[int], table: Table, null_players: int = 0
) -> tuple[int, ...]:
    """SV of the round from its settled table: ``floor(φ_i · SV_SCALE)`` for each client,
    exact (the stratified estimate, regression-adjusted when the table is sampled), and 0 for
    the clients of the ``null_players`` mask (``NullPlayerGame.null_players``)."""
    if len(schedule) != len(table):
        raise TableLengthMismatch(expected=len(schedule), got=len(table))
    return fixed_point_estimate(n, list(zip(schedule, table, strict=True)), null_players)
