"""The one place edgeml reaches under aiomqtt into the paho client it wraps.

aiomqtt 2.5 has no switch for manual acknowledgement and delivers messages through a
per-message Task; paho, underneath, has both what edgeml needs and costs less:

* manual ack, so a QoS 1 message is acknowledged only after it is committed to SQLite;
* the raw paho message (with its DUP flag) from paho's own `on_message` callback;
* a non-blocking publish, so a prediction per reading does not await a round trip.

`tests/transport/test_paho_hooks.py` fails loudly if a new aiomqtt or paho moves any of these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

__all__ = ["ack", "drop", "enable_manual_ack", "publish_nowait", "set_receiver"]


def _paho(client: aiomqtt.Client) -> Any:
    return client._client


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """From now on the client sends PUBACK only when `ack` is called."""
    _paho(client).manual_ack_set(True)


def ack(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Queue the PUBACK of one QoS 1 delivery (a no-op for QoS 0)."""
    _paho(client).ack(mid, qos)


def set_receiver(client: aiomqtt.Client, receive: Callable[[paho.MQTTMessage], None]) -> None:
    """Deliver every incoming message to `receive` (called on the event loop's thread).

    aiomqtt's own queue then stays empty; its `messages` iterator still raises MqttError
    when the connection drops, which is how the session notices a disconnect.
    """

    def on_message(_client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        receive(message)

    _paho(client).on_message = on_message


def publish_nowait(
    client: aiomqtt.Client,
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    properties: Any = None,
) -> bool:
    """Queue a publish without waiting for it; False if the client is not connected.

    `properties`: MQTT 5 properties of the PUBLISH (a reply's Correlation Data).
    """
    info = _paho(client).publish(topic, payload, qos, retain, properties)
    return bool(info.rc == paho.MQTT_ERR_SUCCESS)


def drop(client: aiomqtt.Client) -> None:
    """Close the socket without a DISCONNECT, as a device that loses power does: the broker
    then publishes the client's will. (Used by the simulator.)
    """
    _paho(client)._sock_close()
