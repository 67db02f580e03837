"""Every service of one server process, built once, and the work that keeps them.

An entry point (the REST app today; gRPC, GraphQL and the event streams next)
takes a ``Services`` and calls its members: ``ledger`` and ``identity`` for the
use cases, ``authenticator``, ``limits`` and ``audit_appender`` for what every
request goes through, ``audit_log`` for reading the log, ``notifications`` for
what one process tells the others. ``start`` opens the
database and starts the batching writer and the background rounds (expiry of
pending transfers, the idempotency purge, the audit sealer, webhook delivery); ``stop`` finishes
queued writes and closes everything, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from tally.audit import Appender, AuditLog
from tally.config import Settings
from tally.errors import TallyError, Unauthenticated
from tally.events import EventHub, parse_wakeup
from tally.events.redis import RedisWakeups
from tally.identity.authentication import Authenticator
from tally.identity.credentials import CredentialCache
from tally.identity.passwords import PasswordHasher
from tally.identity.principals import Principal
from tally.identity.service import Identity
from tally.identity.tokens import Keyring
from tally.ledger import Ledger
from tally.ledger.expiry import expire_due
from tally.ledger.retention import purge_expired_keys
from tally.ledger.writer import Writer
from tally.limits import Limiter, Limits
from tally.storage import make_store
from tally.storage.notifications import EVENTS_CHANNEL
from tally.storage.wakeup_leases import RENEW_INTERVAL_SECONDS, WakeupLeases
from tally.support.clock import Clock, wall_clock_us
from tally.support.loops import start_rounds
from tally.webhooks.dispatcher import Dispatcher, DispatchSettings
from tally.webhooks.schedule import Backoff
from tally.webhooks.service import Webhooks

log = logging.getLogger(__name__)

GC_GENERATION0_THRESHOLD = 20_000


class Services:
    def __init__(self, settings: Settings, *, clock: Clock = wall_clock_us) -> None:
        s = settings
        self.settings = s
        self.clock = clock
        self.store = store = make_store(s)
        self.writer = Writer(
            store,
            queue_commands_max=s.writer_queue_commands_max,
            batch_commands_max=s.writer_batch_commands_max,
            retry_after_seconds=s.writer_retry_after_seconds,
            conflict_retry_after_seconds=s.db_unavailable_retry_after_seconds,
            clock=clock,
            gather_seconds=s.writer_gather_ms / 1000,
        )
        self.ledger = Ledger(
            store,
            self.writer,
            clock=clock,
            in_use_retry_after_seconds=s.idempotency_in_use_retry_after_seconds,
        )
        self.keyring = Keyring(
            store,
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
            access_ttl_seconds=s.access_token_ttl_seconds,
            reload_seconds=s.signing_key_reload_seconds,
            clock=clock,
        )
        self.notifications = store.notifications
        self.credentials = CredentialCache(
            self.notifications, ttl_seconds=s.credential_cache_seconds
        )
        self.authenticator = Authenticator(store, self.keyring, self.credentials)
        self.identity = Identity(
            store,
            PasswordHasher(
                memory_kib=s.password_hash_memory_kib,
                time_cost=s.password_hash_time_cost,
                concurrency_max=s.password_hash_concurrency_max,
            ),
            self.keyring,
            clock=clock,
            session_ttl_seconds=s.session_ttl_seconds,
            invitation_ttl_seconds=s.invitation_ttl_seconds,
        )
        self._limiter = Limiter(s.redis_url, timeout_seconds=s.redis_timeout_seconds)
        self.limits = Limits(self._limiter, s)
        self.audit_appender = Appender(
            store,
            flush_seconds=s.audit_flush_seconds,
            queue_rows_max=s.audit_queue_rows_max,
            batch_rows_max=s.audit_batch_rows_max,
        )
        self.audit_log = AuditLog(store)
        self.webhooks = Webhooks(
            store,
            clock=clock,
            allow_loopback=s.webhooks_allow_loopback,
            endpoints_per_tenant_max=s.webhooks_endpoints_per_tenant_max,
            secret_overlap_seconds=s.webhooks_secret_overlap_seconds,
        )
        # Its streams' and webhook deliveries' leases (storage.wakeup_leases).
        self.leases = WakeupLeases(store)
        self.dispatcher = self._dispatcher()
        self.events = self._event_hub()
        self._rounds: list[asyncio.Task[None]] = []

    async def admit(
        self, authorization: str | None, address: str | None
    ) -> tuple[Principal, dict[str, str]]:
        """Who is calling (the ``Authorization`` value), and the rate-limit metadata
        their call earned; or the error that stops it (401, 429). Every entry point
        admits its callers here: REST and GraphQL (``api.endpoint.admit``), gRPC.

        A flood of bad credentials from one address runs into that address's
        bucket (429), so guessing keys or tokens, and the audit rows of the
        failures, are bounded like any other traffic."""
        try:
            principal = await self.authenticator.authenticate(authorization)
        except Unauthenticated:
            await self.limits.for_address(address)
            raise
        return principal, await self.limits.for_credential(principal.actor_type, principal.actor_id)

    def _dispatcher(self) -> Dispatcher | None:
        """This process's webhook deliveries, unless it makes none."""
        s = self.settings
        if not s.webhooks_deliver:
            return None
        dispatcher = Dispatcher(
            self.store, self.ledger, dispatch_settings(s), clock=self.clock, leases=self.leases
        )
        self.webhooks.on_endpoints_changed = dispatcher.endpoints_changed
        return dispatcher

    def _event_hub(self) -> EventHub:
        """The live events of this process, woken by this process's writer and by
        the others' commits: through Redis when it is set, else PostgreSQL NOTIFY
        (SQLite is one process: its writer is enough)."""
        s = self.settings
        hub = EventHub(
            self.ledger,
            buffer_events_max=s.events_buffer_events_max,
            heartbeat_seconds=s.events_heartbeat_seconds,
            poll_seconds=s.events_poll_seconds,
            leases=self.leases,
            send_timeout_seconds=s.events_send_timeout_seconds,
            # A stream ends within a quarter of its lifetime of its end (tests use 0.5 s).
            tick_seconds=min(1.0, s.events_stream_seconds_max / 4 or 1.0),
        )
        self._wakeups: RedisWakeups | None = None
        # A commit anywhere by a tenant with a webhook endpoint also wakes this
        # process's dispatcher, so a delivery need not wait for its poll
        # (docs/webhooks.md).
        dispatcher = self.dispatcher

        def local(tenant_ids: set[str]) -> None:
            hub.wake(tenant_ids)
            if dispatcher is not None:
                dispatcher.wake_for(tenant_ids)

        def remote(message: str) -> None:
            hub.on_message(message)
            if dispatcher is not None:
                dispatcher.wake_for((parse_wakeup(message)[0],))

        if s.redis_url:
            wakeups = self._wakeups = RedisWakeups(
                s.redis_url,
                timeout_seconds=s.redis_timeout_seconds,
                on_message=remote,
                on_reset=hub.wake_all,
            )

            def committed(tenant_ids: set[str]) -> None:
                local(tenant_ids)
                wakeups.publish(tenant_ids)

            self.writer.on_committed = committed
        else:
            self.writer.on_committed = local
            if not s.is_sqlite:
                self.notifications.subscribe(EVENTS_CHANNEL, remote, hub.wake_all)
        return hub

    async def start(self) -> None:
        _tune_garbage_collector()
        await self.store.open()
        await self.notifications.start()
        try:
            await self.keyring.load()
        except TallyError as exc:  # the database is away: the first token will load them
            log.warning("signing keys not loaded at start: %s", exc.detail or exc.code)
        self.writer.start()
        self.audit_appender.start()
        await self.events.start()
        self.events.close_on_exit_signals()
        if self._wakeups is not None:
            await self._wakeups.start()
        s = self.settings
        self._rounds = [
            start_rounds(
                "audit sealer",
                lambda: self.audit_log.seal(s.audit_seal_rows_max),
                interval_seconds=s.audit_seal_interval_seconds,
                batch_max=s.audit_seal_rows_max,
            ),
            start_rounds(
                "expiry",
                lambda: expire_due(self.store, self.writer, self.clock(), s.expiry_batch_max),
                interval_seconds=s.expiry_interval_seconds,
                batch_max=s.expiry_batch_max,
            ),
            start_rounds(
                "wakeup leases",
                self.leases.renew,
                interval_seconds=RENEW_INTERVAL_SECONDS,
                batch_max=1,
            ),
            start_rounds(
                "idempotency purge",
                lambda: purge_expired_keys(self.store, self.clock(), s.idempotency_purge_batch_max),
                interval_seconds=s.idempotency_purge_interval_seconds,
                batch_max=s.idempotency_purge_batch_max,
                wait_first=True,
            ),
        ]
        if self.dispatcher is not None:
            self.dispatcher.start()

    async def stop(self) -> None:
        for task in self._rounds:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._rounds.clear()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self._wakeups is not None:
            await self._wakeups.stop()
        await self.events.stop()
        await self.writer.stop()
        await self.audit_appender.stop()
        await self._limiter.close()
        await self.notifications.stop()
        await self.store.close()


def dispatch_settings(s: Settings) -> DispatchSettings:
    return DispatchSettings(
        allow_loopback=s.webhooks_allow_loopback,
        poll_interval_seconds=s.webhooks_poll_interval_seconds,
        attempt_timeout_seconds=s.webhooks_attempt_timeout_seconds,
        lease_margin_seconds=s.webhooks_lease_margin_seconds,
        concurrency_max=s.webhooks_concurrency_max,
        fill_batch_max=s.webhooks_fill_batch_max,
        heartbeat_seconds=s.webhooks_heartbeat_seconds,
        worker_ttl_seconds=s.webhooks_worker_ttl_seconds,
        backoff=Backoff(
            base_seconds=s.webhooks_retry_base_seconds,
            delay_max_seconds=s.webhooks_retry_delay_max_seconds,
            jitter=s.webhooks_retry_jitter,
            attempts_max=s.webhooks_attempts_max,
        ),
    )


def _tune_garbage_collector() -> None:
    """Collect cyclic garbage less often: a request allocates hundreds of objects,
    almost none of them in cycles, and with the default threshold (700) the
    collector ran several times per batch (about a tenth of the CPU under load,
    measured with py-spy). Objects alive at start-up (modules, the app) are moved
    out of the collector's view for good, so full collections stay short."""
    gc.collect()
    gc.freeze()
    _, generation1, generation2 = gc.get_threshold()
    gc.set_threshold(GC_GENERATION0_THRESHOLD, generation1, generation2)
