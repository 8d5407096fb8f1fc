"""A delivery -> what each stream makes of it: decode, join, dedupe.

Pure until `keep`: the engine first learns which models the results need (and may have to
read one back from the store and call again), then keeps the delivery's join fields.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeml.config import Config
from edgeml.core.decode import Decoder, Partial, decode_all
from edgeml.core.join import Joins
from edgeml.core.repeats import Repeats
from edgeml.records import Delivery, Reject, Sample

__all__ = ["Intake", "Result"]

# What one stream makes of a delivery; None: its fields wait in a join.
Result = Sample | Reject | None
# An MQTT 3.1.1 broker sends at most this many unacknowledged messages (transport.mqtt).
_MQTT311_IN_FLIGHT = 20


class Intake:
    def __init__(self, cfg: Config) -> None:
        self.decoders = [Decoder(s, cfg.mqtt.max_payload_bytes) for s in cfg.stream]
        m = cfg.mqtt
        window = m.receive_maximum if m.protocol == "5" else _MQTT311_IN_FLIGHT
        self.joins = Joins(cfg.stream, cfg.models.max_live, window // 2)
        self.repeats = Repeats(cfg.stream, cfg.models.max_live)

    def results(self, d: Delivery) -> tuple[bool, list[Result], Sequence[Partial]]:
        """(whether a stream's filter matched, each matching stream's result, the join
        fields the delivery brings). Changes nothing.
        """
        matched, decoded = decode_all(self.decoders, d.topic, d.payload, d.arrival, d.retained)
        partials: Sequence[Partial] = ()
        results: list[Result]
        if self.joins.specs:
            partials = [r for r in decoded if isinstance(r, Partial)]
            results = self.joins.offer(decoded, d.arrival)
        else:
            results = decoded  # type: ignore[assignment]  # only joins make Partials
        if self.repeats.streams:
            results = self.repeats.mark(results)
        return matched, results, partials

    def keep(
        self, d: Delivery, results: Sequence[Result], partials: Sequence[Partial], fp: int | None
    ) -> bool:
        """Keep the delivery's join fields; True if its ack is held for them (it made no
        sample in any stream, so only the broker's copy keeps its fields through a crash).
        """
        made = any(isinstance(r, Sample) for r in results)
        return self.joins.keep(partials, d.arrival, None if made else d.ack, d.dedup, fp)
