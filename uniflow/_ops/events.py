"""``uniflow events``: the stage moves of a registry, and one event named by its tag.

Listing reads the lifecycle history (the source of truth, brought by ``pull`` and by a
registry read by URL), whether or not ``[events] tags`` is on: each record names the tag
it has, or would have (:attr:`EventRecord.tag`). Event tags are derived, like stage
pointers, and a clone need not have fetched them.

:func:`show_event` serves a CI job started by the tag (``$GITHUB_REF``): the tag, when this
repository has it, is read through its gate and, when the lifecycle is here too, must agree
with the event of that seq; without the tag (a checkout that fetched only the lifecycle)
the lifecycle's event is used.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._errors import IntegrityError, NotFoundError, UsageError
from .._records.eventtags import TAGGED_ACTIONS, EventRecord, EventTags, parse_event_ref

if TYPE_CHECKING:
    from .._repo import Repository
    from .._types import HistoryEvent

__all__ = ["list_events", "parse_since", "show_event"]


def parse_since(text: str | int | datetime | None) -> int | datetime | None:
    """``--since``: a sequence number (events after it) or an ISO-8601 time (events at or
    after it; a time without a zone is UTC); anything else is a one-line UsageError."""
    if text is None or isinstance(text, datetime | int) and not isinstance(text, bool):
        return text if not isinstance(text, datetime) or text.tzinfo else text.replace(tzinfo=UTC)
    if isinstance(text, str) and text.isascii() and text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r} is neither a sequence number nor an ISO-8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def list_events(
    repo: Repository, name: str | None = None, since: str | int | datetime | None = None
) -> list[EventRecord]:
    """The promote, archive and rollback events of ``name`` (every model when None), oldest
    first per model, models in name order; ``since``: see :func:`parse_since`."""
    after = parse_since(since)
    if name is not None:
        repo.require_model(name)
    names = [name] if name is not None else repo.index.models()
    out: list[EventRecord] = []
    for model in names:
        for ev in repo.lifecycle.history(model):
            if ev.action not in TAGGED_ACTIONS or ev.to_stage is None:
                continue
            if isinstance(after, int) and ev.seq <= after or isinstance(after, datetime) and ev.at < after:
                continue
            out.append(_record(model, ev))
    return out


def show_event(repo: Repository, ref: str) -> EventRecord:
    """The event that event tag ``ref`` names (``refs/tags/uniflow/<m>/<s>/<n>`` or
    ``uniflow/<m>/<s>/<n>``): UsageError for a malformed name, NotFoundError when neither
    the tag nor the lifecycle event exists here, IntegrityError when they disagree."""
    model, stage, seq = parse_event_ref(ref)
    tagged = EventTags(repo.git).read(model, stage, seq)
    logged = _lifecycle_event(repo, model, seq)
    if logged is None:
        if tagged is None:
            raise NotFoundError(
                f"no event tag uniflow/{model}/{stage}/{seq} and no event {seq} of {model!r} here"
            )
        return tagged
    record = _record(model, logged) if logged.action in TAGGED_ACTIONS else None
    if record is None or record.stage != stage:
        what = (
            f"event {seq} of model {model!r} is a {logged.action} to {logged.to_stage}, not a move to {stage}"
        )
        raise (NotFoundError if tagged is None else IntegrityError)(what)
    if tagged is not None and tagged != record:
        raise IntegrityError(
            f"event tag {record.tag} disagrees with event {seq} of the lifecycle of {model!r}"
        )
    return record


def _record(model: str, ev: HistoryEvent) -> EventRecord:
    """The record of stage move ``ev`` of ``model``."""
    return EventRecord(
        model=model,
        version=ev.version,
        stage=ev.to_stage or "",
        seq=ev.seq,
        action=ev.action,
        actor=ev.actor or None,
        time=ev.at,
        from_stage=ev.from_stage,
        displaced=ev.displaced,
        reason=ev.reason,
    )


def _lifecycle_event(repo: Repository, model: str, seq: int) -> HistoryEvent | None:
    """The event numbered ``seq`` of ``model``'s lifecycle here (any action), or None."""
    if repo.lifecycle.head(model) is None:
        return None
    return next((ev for ev in repo.lifecycle.history(model) if ev.seq == seq), None)
