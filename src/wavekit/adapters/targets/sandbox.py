"""The sandbox target: grants kept in the wavekit store. The default, and the demo's target."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, tuple_
from sqlalchemy import select as core_select  # sqlmodel's select() types at most 4 columns
from sqlmodel import Session, col, select

from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import SandboxGrant
from wavekit.adapters.targets.base import (
    BATCH_SIZE,
    ApplyResult,
    BatchResult,
    ClosesOnExit,
    ProgressCallback,
    apply_in_batches,
)
from wavekit.domain.grants import Grant, GrantSet

_CHUNK = 500  # IN-list size that stays under SQLite's bound-parameter limit
_SEP = "\x1f"  # ASCII unit separator: joins an entitlement's holders in read_grant_frame


class SandboxTarget(ClosesOnExit):
    """A target whose grants live in the store table `sandboxgrant` under a sandbox name."""

    def __init__(self, database_url: str, sandbox: str = "default") -> None:
        self.database_url = database_url
        self.sandbox = sandbox
        self.name = f"sandbox:{sandbox}"

    def read_grants(self, entitlements: Collection[str]) -> GrantSet:
        wanted = sorted(set(entitlements))
        found: set[Grant] = set()
        with session_scope(self.database_url) as s:
            for i in range(0, len(wanted), _CHUNK):
                rows = s.exec(
                    select(SandboxGrant.identity, SandboxGrant.entitlement).where(
                        SandboxGrant.sandbox == self.sandbox,
                        col(SandboxGrant.entitlement).in_(wanted[i : i + _CHUNK]),
                    )
                )
                found.update(Grant(i_, e) for i_, e in rows)
        return frozenset(found)

    def read_grant_frame(self, entitlements: Collection[str]) -> pd.DataFrame:
        """read_grants as a frame (identity; entitlement as a categorical), without a Grant
        per row: the nightly run reads every live package's scope at once.

        One row per entitlement comes back, its holders joined by a separator no identity
        holds; an entitlement whose holders do not split into as many as it counts (a
        separator in a name) is read row by row instead.
        """
        wanted = sorted(set(entitlements))
        names: list[str] = []
        counts: list[int] = []
        holders: list[str] = []
        t = SandboxGrant
        with session_scope(self.database_url) as s:
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                rows = s.connection().execute(
                    core_select(col(t.entitlement), func.aggregate_strings(col(t.identity), _SEP),
                                func.count())
                    .where(col(t.sandbox) == self.sandbox, col(t.entitlement).in_(chunk))
                    .group_by(col(t.entitlement)))
                for entitlement, joined, count in rows:
                    who = joined.split(_SEP)
                    if len(who) != count:
                        who = list(s.exec(select(t.identity).where(
                            t.sandbox == self.sandbox, t.entitlement == entitlement)))
                    names.append(entitlement)
                    counts.append(len(who))
                    holders.extend(who)
        codes = np.repeat(np.arange(len(names)), counts)
        return pd.DataFrame({
            "identity": np.array(holders, dtype=object),
            "entitlement": pd.Categorical.from_codes(codes, categories=pd.Index(names,
                                                                                dtype=object)),
        })

    def apply(
        self,
        adds: Iterable[Grant],
        removes: Iterable[Grant],
        *,
        batch_size: int = BATCH_SIZE,
        on_batch: ProgressCallback | None = None,
    ) -> ApplyResult:
        return apply_in_batches(self._apply_batch, adds, removes, batch_size, on_batch)

    def _apply_batch(self, index: int, adds: list[Grant], removes: list[Grant]) -> BatchResult:
        # One transaction per batch: a crash loses at most the batch in flight, never half of it.
        touched = adds + removes
        with session_scope(self.database_url) as s:
            present = self._present(s, touched)
            to_add = [g for g in adds if g not in present]
            to_remove = [g for g in removes if g in present]
            s.add_all(SandboxGrant(sandbox=self.sandbox, identity=g.identity,
                                   entitlement=g.entitlement) for g in to_add)
            for i in range(0, len(to_remove), _CHUNK):
                pairs = [(g.identity, g.entitlement) for g in to_remove[i : i + _CHUNK]]
                s.exec(delete(SandboxGrant).where(
                    col(SandboxGrant.sandbox) == self.sandbox,
                    tuple_(SandboxGrant.identity, SandboxGrant.entitlement).in_(pairs),
                ))
        return BatchResult(index, len(to_add), len(to_remove), len(touched) - len(to_add)
                           - len(to_remove))

    def _present(self, s: Session, grants: list[Grant]) -> set[Grant]:
        present: set[Grant] = set()
        for i in range(0, len(grants), _CHUNK):
            pairs = [(g.identity, g.entitlement) for g in grants[i : i + _CHUNK]]
            rows = s.exec(select(SandboxGrant.identity, SandboxGrant.entitlement).where(
                SandboxGrant.sandbox == self.sandbox,
                tuple_(SandboxGrant.identity, SandboxGrant.entitlement).in_(pairs),
            ))
            present.update(Grant(a, b) for a, b in rows)
        return present

    def close(self) -> None:
        """Nothing to release: sessions are opened per call."""
