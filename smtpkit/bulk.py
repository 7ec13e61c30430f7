"""Campaigns: many prepared messages over a pool of pipelined connections, durably.

:func:`send_campaign` takes messages that already have their bytes and a stable key, and
sends them over ``connections`` connections (threads, each its own ``smtpkit.SMTP``),
in batches through :meth:`smtpkit.SMTP.send_many` (one round trip per message). Around
that it adds what a bulk sender needs:

* a rate limit (:class:`RateLimit`: per second, minute and day; a token bucket);
* retries of transient failures (4xx, a dropped connection before the message started)
  with exponential backoff and jitter (:class:`RetryPolicy`); 5xx is never retried;
* provider quota replies (daily limits, throttling, too many connections) stop the whole
  campaign: every row not yet sent is ``not_attempted``, never ``failed``;
* a :class:`~smtpkit.journal.Journal`, so that a re-run after a crash, a kill or a Stop
  sends only what was not confirmed, and rows whose fate is unknown are reported as such;
* a Stop (a ``threading.Event``) honoured between batches, leaving the journal consistent.

The result is one :class:`Outcome` per message; ``CampaignResult.to_frame()`` gives a
pandas DataFrame.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import (
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPException,
    SMTPInsecureAuthError,
    SMTPNotAttempted,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPUnknownOutcome,
)
from .journal import Journal
from .protocol import Body, Outgoing, SendResult
from .reply import Reply

__all__ = ["CampaignResult", "Outcome", "Prepared", "RateLimit", "RetryPolicy", "is_quota_reply", "send_campaign"]


@dataclass(frozen=True)
class Prepared:
    """A message ready to send: its stable key, envelope and bytes."""

    key: str
    sender: str
    recipients: Sequence[str]
    data: bytes
    message_id: str | None = None


@dataclass
class Outcome:
    """What happened to one message."""

    key: str
    status: str  # sent | failed | deferred | unknown | not_attempted | skipped
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    attempts: int = 0
    message_id: str | None = None
    recipients: tuple[str, ...] = ()
    refused: dict[str, int] = field(default_factory=dict)
    time: float = 0.0


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter for transient failures (RFC 5321 4.5.4.1: configurable)."""

    attempts: int = 3  # total tries per message
    base: float = 2.0  # seconds before the first retry
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.25  # +/- this fraction

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        raw = min(self.max_delay, self.base * self.factor ** max(0, attempt - 1))
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return max(0.0, raw * spread)


class RateLimit:
    """A token bucket per window: at most ``per_second``, ``per_minute`` and ``per_day`` sends.

    ``clock`` and ``sleep`` can be replaced (tests use a fake clock).
    """

    def __init__(
        self,
        per_second: float | None = None,
        per_minute: float | None = None,
        per_day: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._windows = [
            (rate, seconds) for rate, seconds in ((per_second, 1.0), (per_minute, 60.0), (per_day, 86400.0)) if rate
        ]
        self._sent: list[deque[float]] = [deque() for _ in self._windows]
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    def per_second(self) -> float:
        """The sustained rate the tightest window allows, in messages per second."""
        return min((rate / seconds for rate, seconds in self._windows), default=float("inf"))

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until one more send fits in every window; ``False`` if ``stop`` is set first."""
        while True:
            if stop is not None and stop.is_set():
                return False
            with self._lock:
                now = self._clock()
                wait = 0.0
                for (rate, seconds), sent in zip(self._windows, self._sent, strict=True):
                    while sent and sent[0] <= now - seconds:
                        sent.popleft()
                    if len(sent) >= rate:
                        wait = max(wait, sent[0] + seconds - now)
                if wait <= 0:
                    for sent in self._sent:
                        sent.append(now)
                    return True
            if stop is not None and self._sleep is time.sleep:
                stop.wait(wait)  # a Stop ends the wait at once
            else:
                self._sleep(wait)


_QUOTA_WORDS = (
    "daily",
    "quota",
    "limit exceeded",
    "throttl",
    "rate exceeded",
    "too many connections",
    "concurrent connections",
)


def is_quota_reply(code: int | None, enhanced: tuple[int, int, int] | None, text: str) -> bool:
    """A provider limit (campaign-level), not a problem with this message or recipient."""
    lowered = text.lower()
    # 5.4.5 is the daily-limit status (Gmail); 432 is Exchange's "concurrent connections"; a plain
    # 4.3.2 ("system not accepting messages", e.g. a shutdown) is transient, not a quota
    if enhanced == (5, 4, 5) or code == 432:
        return True
    return code in (421, 450, 451, 454, 550, 554) and any(word in lowered for word in _QUOTA_WORDS)


@dataclass
class CampaignResult:
    """Every message's :class:`Outcome`, in input order, and a summary."""

    campaign: str
    outcomes: list[Outcome]
    elapsed: float
    stopped_by: str | None = None  # "quota: ...", "cannot connect: ..." or "stop requested"
    connect_error: BaseException | None = field(default=None, repr=False)  # why "cannot connect"

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    def to_frame(self) -> Any:
        """A pandas DataFrame, one row per message."""
        try:
            import pandas as pd  # type: ignore[import-untyped]
        except ImportError:
            raise ImportError("results as a DataFrame need pandas: pip install 'smtpkit[data]'") from None
        frame = pd.DataFrame([asdict(o) for o in self.outcomes])
        return frame.set_index("key") if len(frame) else frame

    def _repr_html_(self) -> str:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.summary().items()))
        rate = len(self.outcomes) / self.elapsed if self.elapsed else 0.0
        return f"<p><b>campaign {self.campaign}</b>: {parts} in {self.elapsed:.1f} s ({rate:,.0f} msg/s)</p>"


def _permanent(exc: BaseException) -> bool:
    """A connection failure that retrying cannot fix."""
    if isinstance(exc, SMTPAuthenticationError):
        return not 400 <= int(getattr(exc, "smtp_code", 500) or 500) < 500  # 454: try again later
    return isinstance(exc, SMTPCertificateError | SMTPInsecureAuthError) or not isinstance(exc, SMTPException | OSError)


def _describe(reply: Any) -> tuple[int | None, str | None, str | None]:
    if reply is None:
        return None, None, None
    enhanced = ".".join(map(str, reply.enhanced)) if reply.enhanced else None
    return reply.code, enhanced, reply.text


def send_campaign(
    messages: Iterable[Prepared],
    connect: Callable[[], Any],
    *,
    campaign: str = "campaign",
    journal: Journal | None = None,
    connections: int = 4,
    batch_size: int = 50,
    rate: RateLimit | None = None,
    retry: RetryPolicy | None = None,
    stop: threading.Event | None = None,
    resend_unknown: bool = False,
    progress: Callable[[Outcome], None] | None = None,
    idle_check: float | None = 15.0,
) -> CampaignResult:
    """Send prepared messages; see the module docstring for the guarantees.

    ``connect()`` returns a ready ``smtpkit.SMTP`` (connected, TLS and login done); it is
    called once per worker and again after a connection is lost. A connection idle for
    more than ``idle_check`` seconds is checked with NOOP before it is used again (servers
    drop idle clients); ``None`` disables the check.
    """
    retry = retry or RetryPolicy()
    stop = stop or threading.Event()
    if rate is not None and rate.per_second() < float(
        "inf"
    ):  # about a second's worth per batch: progress and Stop stay responsive
        batch_size = max(1, min(batch_size, int(rate.per_second() / max(1, connections))))
    items = list(messages)
    keys = [m.key for m in items]
    if len(set(keys)) != len(keys):
        raise ValueError("message keys must be unique within a campaign")
    outcomes: dict[str, Outcome] = {}
    todo = set(keys)
    if journal is not None:
        journal.recover(campaign)
        todo = journal.plan(campaign, keys, resend_unknown=resend_unknown)
        previous = journal.rows(campaign)
        for key in keys:
            if key not in todo:
                row = previous[key]
                outcomes[key] = Outcome(
                    key,
                    row.status if row.status != "sent" else "skipped",
                    row.code,
                    row.enhanced,
                    row.text,
                    row.attempts,
                    row.message_id,
                )
    by_key = {m.key: m for m in items}
    queue: deque[tuple[float, str, int]] = deque((0.0, m.key, 0) for m in items if m.key in todo)
    lock = threading.Lock()
    stopped: list[str] = []
    connect_errors: list[BaseException] = []
    started = time.monotonic()

    def finish(outcome: Outcome) -> None:
        outcome.time = time.time()
        with lock:
            outcomes[outcome.key] = outcome
        if journal is not None:
            journal.record(
                campaign,
                outcome.key,
                outcome.status,
                code=outcome.code,
                enhanced=outcome.enhanced,
                text=outcome.text,
                message_id=outcome.message_id,
            )
        if progress is not None:
            progress(outcome)

    def take_batch() -> list[tuple[str, int]] | None:
        """Up to batch_size due items, or None when nothing is left to do."""
        while True:
            with lock:
                if stop.is_set() or not queue:
                    return None
                now = time.monotonic()
                batch: list[tuple[str, int]] = []
                for _ in range(len(queue)):
                    due, key, attempts = queue.popleft()
                    if due <= now and len(batch) < batch_size:
                        batch.append((key, attempts))
                    else:
                        queue.append((due, key, attempts))
                if batch:
                    return batch
                wait = min(due for due, _, _ in queue) - now
            stop.wait(max(0.01, min(wait, 1.0)))

    def requeue(key: str, attempts: int, counted: bool) -> None:
        delay = retry.delay(attempts) if counted else 0.0
        with lock:
            queue.append((time.monotonic() + delay, key, attempts))

    def handle(key: str, attempts: int, result: SendResult | BaseException) -> None:
        message = by_key[key]
        if isinstance(result, SendResult):
            code, enhanced, text = _describe(result.data_reply)
            refused = {r: c for r, (c, _) in result.items()}
            finish(
                Outcome(
                    key, "sent", code, enhanced, text, attempts, message.message_id, tuple(message.recipients), refused
                )
            )
            return
        if isinstance(result, SMTPUnknownOutcome):
            finish(
                Outcome(
                    key, "unknown", None, None, str(result), attempts, message.message_id, tuple(message.recipients)
                )
            )
            return
        if isinstance(result, SMTPNotAttempted):  # never started: not an attempt
            if journal is not None:
                journal.mark(campaign, [key], "pending")
            requeue(key, attempts - 1, counted=False)
            return
        if isinstance(result, SMTPServerDisconnected) and getattr(result, "smtp_code", None) is None:
            lost = str(result) or "connection lost"  # dropped before the content: not delivered
            if attempts < retry.attempts:
                if journal is not None:
                    journal.mark(campaign, [key], "deferred")
                requeue(key, attempts, counted=True)
                return
            finish(Outcome(key, "deferred", None, None, lost, attempts, message.message_id, tuple(message.recipients)))
            return
        code = getattr(result, "smtp_code", None)
        reply_text = getattr(result, "smtp_error", b"")
        text = reply_text.decode("utf-8", "replace") if isinstance(reply_text, bytes) else str(reply_text or result)
        enhanced_t = None
        sendresult = getattr(result, "result", None)
        if code is None and isinstance(sendresult, SendResult):  # all recipients refused
            first = next(iter(sendresult.values()), None)
            if first:
                code, raw = first
                text = raw.decode("utf-8", "replace")
        if code is not None:
            enhanced_t = Reply(code, text.encode("utf-8", "replace")).enhanced
        enhanced = ".".join(map(str, enhanced_t)) if enhanced_t else None
        if is_quota_reply(code, enhanced_t, text):
            with lock:
                if not stop.is_set():
                    stopped.append(f"quota: {code} {text}")
                    stop.set()
            finish(
                Outcome(
                    key,
                    "not_attempted",
                    code,
                    enhanced,
                    f"campaign stopped by a provider limit: {text}",
                    attempts - 1,
                    message.message_id,
                )
            )
            return
        transient = code is not None and 400 <= code < 500
        if transient and attempts < retry.attempts:
            if journal is not None:
                journal.mark(campaign, [key], "deferred")
            requeue(key, attempts, counted=True)
            return
        status = "deferred" if transient else "failed"
        if not isinstance(result, SMTPResponseException | SMTPException) and code is None:
            status = "failed"
        finish(Outcome(key, status, code, enhanced, text, attempts, message.message_id, tuple(message.recipients)))

    def healthy(smtp: Any) -> bool:
        """A pooled connection idle for a while gets a NOOP before it is trusted again."""
        try:
            return bool(smtp.noop()[0] == 250)
        except (SMTPException, OSError):
            smtp.close()
            return False

    def worker() -> None:
        smtp = None
        failures = 0
        last_used = time.monotonic()
        try:
            while (batch := take_batch()) is not None:
                if rate is not None and not all(rate.acquire(stop) for _ in batch):
                    for key, attempts in batch:  # stopped while waiting for the rate limit: untouched
                        requeue(key, attempts, counted=False)
                    continue
                if (
                    smtp is not None
                    and idle_check is not None
                    and time.monotonic() - last_used > idle_check
                    and getattr(smtp, "sock", None) is not None
                    and not healthy(smtp)
                ):
                    smtp = None
                if smtp is None or getattr(smtp, "sock", None) is None:
                    try:
                        smtp = connect()
                        failures = 0
                        if connections > 1 and hasattr(smtp, "spin"):
                            # threads that busy-wait take turns at the GIL with the others'
                            # real work: with several connections, waits sleep
                            smtp.spin = 0.0
                    except Exception as exc:
                        failures += 1
                        for key, attempts in batch:
                            requeue(key, attempts, counted=True)
                        # a refused login, a certificate that does not verify or bad settings will
                        # not get better by retrying (and repeated bad logins can lock an account)
                        if failures >= retry.attempts or _permanent(exc):
                            connect_errors.append(exc)
                            with lock:
                                if not stop.is_set():
                                    stopped.append(f"cannot connect: {exc}")
                                    stop.set()
                            return
                        stop.wait(retry.delay(failures))
                        continue
                if journal is not None:
                    journal.mark(campaign, [k for k, _ in batch], "sending", attempt=True)
                outgoing = [Outgoing(by_key[k].sender, by_key[k].recipients, Body(by_key[k].data)) for k, _ in batch]
                reported: set[int] = set()

                def report(
                    i: int,
                    r: SendResult | BaseException,
                    batch: list[tuple[str, int]] = batch,
                    reported: set[int] = reported,
                ) -> None:
                    reported.add(i)
                    handle(batch[i][0], batch[i][1] + 1, r)

                results = smtp.send_many(outgoing, on_result=report)
                last_used = time.monotonic()
                for i, r in enumerate(results):  # never started (the connection failed first)
                    if i not in reported:
                        handle(batch[i][0], batch[i][1] + 1, r)
        finally:
            if smtp is not None and getattr(smtp, "sock", None) is not None:
                try:
                    smtp.quit()
                except (SMTPException, OSError):
                    smtp.close()

    threads = [
        threading.Thread(target=worker, name=f"smtpkit-campaign-{i}", daemon=True) for i in range(max(1, connections))
    ]
    for thread in threads:
        thread.start()
    interrupted = False
    while any(t.is_alive() for t in threads):
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:  # Ctrl-C / a notebook interrupt: finish the batches in flight, then stop
            interrupted = True
            stopped.append("interrupted")
            stop.set()
    # whatever is left was not attempted: a Stop, a quota, or a server that cannot be reached
    with lock:
        leftover = [(key, attempts) for _, key, attempts in queue]
        queue.clear()
    reason = stopped[0] if stopped else ("stop requested" if stop.is_set() else None)
    for key, attempts in leftover:
        message = by_key[key]
        status = "deferred" if attempts and not stop.is_set() else "not_attempted"
        finish(Outcome(key, status, None, None, reason or "not attempted", attempts, message.message_id))
    ordered = [outcomes.get(k) or Outcome(k, "not_attempted", text=reason) for k in keys]
    result = CampaignResult(campaign, ordered, time.monotonic() - started, reason)
    result.connect_error = connect_errors[0] if connect_errors else None
    if interrupted:
        raise KeyboardInterrupt(f"campaign interrupted; journal consistent: {result.summary()}")
    return result
