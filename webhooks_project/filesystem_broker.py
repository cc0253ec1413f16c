"""The quick start's broker: kombu's filesystem transport, with whole messages only.

kombu writes a message by creating its file in the queue folder and then writing it; a worker
listing the folder in between takes an empty or partial file and fails to decode it
(`JSONDecodeError`, seen in the demo under load). Here each message is written under a name no
reader matches, then renamed into place: a rename within one folder is atomic.

Registered in webhooks_project/celery.py under kombu's own `filesystem` alias, so
`CELERY_BROKER_URL=filesystem://` (the default) uses it. Quick start only: production runs
Redis or RabbitMQ.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue`, atomically."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        partial = path + ".part"  # readers take only names ending in .<queue>.msg
        try:
            with open(partial, "wb") as output:
                output.write(str_to_bytes(dumps(payload)))
            os.replace(partial, path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
