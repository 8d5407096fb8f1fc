"""What an idle daemon writes to its storage (an SD card wears out): bytes per day.

    .venv/bin/python bench/idle.py [--seconds 180]

Starts a private mosquitto and `edgeml run` (default store settings: a summary every 2 s),
lets it learn 1,000 readings, waits 5 s for its last figures to be written, then reads
write_bytes from /proc/<pid>/io over `--seconds` of idleness and scales it to a day.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    Broker,
    edgeml_config,
    edgeml_source,
    io_counters,
    make_messages,
    mosquitto_missing,
    progress,
    start_edgeml,
    versions,
)


def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=180.0, help="idle time measured")
    args = p.parse_args()
    if mosquitto_missing():
        sys.exit(1)
    with tempfile.TemporaryDirectory(prefix="edgeml-idle-") as tmp:
        work = Path(tmp)
        broker = Broker(work)
        broker.start()
        proc = None
        try:
            config = edgeml_config(work, "idle", broker.port, stream="s", topic="idle/+/telemetry")
            proc = start_edgeml(config)
            time.sleep(3)
            progress("learning 1,000 readings")
            publish(broker.port, make_messages(1000, 10, 1, "idle"))
            time.sleep(5)
            before = io_counters(proc.pid).get("write_bytes", 0)
            progress(f"idle for {args.seconds:g} s")
            time.sleep(args.seconds)
            written = io_counters(proc.pid).get("write_bytes", 0) - before
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            broker.stop()
    per_day = written / args.seconds * 86400
    print(f"$ python bench/idle.py --seconds {args.seconds:g}")
    print(f"edgeml: {edgeml_source()}; {versions()}")
    print()
    print("| idle seconds | bytes written | per day |")
    print("|---:|---:|---:|")
    print(f"| {args.seconds:g} | {written:,} | {per_day / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
