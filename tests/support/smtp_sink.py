"""An SMTP server that keeps what it receives, for tests/notify_email.rs.

Usage: smtp_sink.py PORT MAILS_FILE

Listens on 127.0.0.1:PORT (0 picks a free port) and prints "ready PORT" once it accepts
connections. Appends each message it accepts to MAILS_FILE as one JSON line: the envelope
("mail_from", "rcpt_tos"), when it arrived ("received_at", seconds since the epoch), the raw message
("data"), and the message as a mail reader shows it ("subject" decoded, "message_id", "parts":
each leaf part's "content_type" and decoded "text").

Recipients whose address starts with "reject" get 550, as from a relay that knows no such user;
those starting with "busy" get 451, as from one that says try later.
"""

import asyncio
import email
import email.policy
import json
import sys
import time

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, mails_file):
        self.mails_file = mails_file
        self.accepted = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 no such user"
        if address.startswith("busy"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        mail = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "received_at": time.time(),
            "data": envelope.content.decode("utf-8", errors="replace"),
            "subject": str(message["subject"]),
            "message_id": str(message["message-id"]),
            "parts": [
                {
                    "content_type": part.get_content_type(),
                    "text": part.get_content().replace("\r\n", "\n"),
                }
                for part in message.walk()
                if not part.is_multipart()
            ],
        }
        with open(self.mails_file, "a", encoding="utf-8") as mails:
            mails.write(json.dumps(mail) + "\n")
        self.accepted += 1
        return f"250 2.0.0 OK queued as SINK{self.accepted}"


async def main(port, mails_file):
    sink = Sink(mails_file)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, hostname="sink.test"), "127.0.0.1", port
    )
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
