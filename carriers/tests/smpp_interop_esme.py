"""An ESME built on `smpplib` (PyPI), for Herald's SMPP interop test: it
talks to Herald's SMSC simulator, which must behave like a real SMSC to a
client Herald did not write.

Usage: smpp_interop_esme.py <port>. Binds as transceiver (herald/secret),
submits one GSM-7 message and one long UCS-2 message split by smpplib into
UDH parts, all with registered_delivery, waits for every receipt, unbinds.
Prints one line per event:

    SENT <submit_sm_resp message_id>
    RECEIPT <receipted_message_id TLV> <message_state TLV> <short_message>
    DONE
"""

import sys

import smpplib.client
import smpplib.consts
import smpplib.gsm

port = int(sys.argv[1])
client = smpplib.client.Client("127.0.0.1", port, allow_unknown_opt_params=True)
expected = [0]
receipts = []


def on_sent(pdu, **kwargs):
    print("SENT", pdu.message_id.decode(), flush=True)


def on_received(pdu, **kwargs):
    receipts.append(pdu)
    print(
        "RECEIPT",
        pdu.receipted_message_id.decode(),
        int(pdu.message_state),
        pdu.short_message.decode("ascii", "replace"),
        flush=True,
    )


client.set_message_sent_handler(on_sent)
client.set_message_received_handler(on_received)
client.connect()
client.bind_transceiver(system_id="herald", password="secret")

for text in ["Hello from smpplib", "Муракозе! " * 20]:
    parts, encoding, esm_class = smpplib.gsm.make_parts(text)
    for part in parts:
        client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
            source_addr="Interop",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
            destination_addr="250788123456",
            short_message=part,
            data_coding=encoding,
            esm_class=esm_class,
            registered_delivery=True,
        )
        expected[0] += 1

while len(receipts) < expected[0]:
    client.read_once()

client.unbind()
client.disconnect()
print("DONE", flush=True)
