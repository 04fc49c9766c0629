"""A minimal SMSC for Herald's SMPP interop test.

Every PDU is decoded and encoded by the `smpp.pdu3` package from PyPI (the
PDU library of the Jasmin SMS gateway, ported to Python 3), not by Herald's
codec. It accepts bind_transceiver for system_id "herald" / password
"secret", answers enquire_link and unbind, answers each submit_sm with an
upper-case hex message id, then sends a delivery receipt (Appendix B text
with a *decimal* id plus receipted_message_id / message_state TLVs) and
reports what it decoded on stdout, one line per event:

    PORT <port>
    SUBMIT <destination_addr> <data_coding scheme> <esm_class> <short_message hex>
    DELIVER_SM_RESP <command_status>
    UNBIND
"""

import asyncio
import io
import struct
import sys
import traceback
from datetime import datetime, timezone

from smpp.pdu import operations as op
from smpp.pdu import pdu_types as t
from smpp.pdu.pdu_encoding import PDUEncoder

ENC = PDUEncoder()
NEXT_ID = [0x0A1B]


def say(*parts):
    print(*parts, flush=True)


async def handle(reader, writer):
    out_seq = 0
    bound = False
    try:
        while True:
            header = await reader.readexactly(4)
            (length,) = struct.unpack(">I", header)
            rest = await reader.readexactly(length - 4)
            sequence = struct.unpack(">I", rest[8:12])[0]
            pdu = ENC.decode(io.BytesIO(header + rest))
            cid = pdu.id
            if cid == t.CommandId.bind_transceiver:
                ok = (
                    pdu.params["system_id"] == b"herald"
                    and pdu.params["password"] == b"secret"
                )
                status = t.CommandStatus.ESME_ROK if ok else t.CommandStatus.ESME_RBINDFAIL
                bound = ok
                writer.write(
                    ENC.encode(
                        op.BindTransceiverResp(
                            seqNum=sequence, status=status, system_id="pysmsc"
                        )
                    )
                )
            elif cid == t.CommandId.enquire_link:
                writer.write(ENC.encode(op.EnquireLinkResp(seqNum=sequence)))
            elif cid == t.CommandId.submit_sm and bound:
                p = pdu.params
                msg_id = "%08X" % NEXT_ID[0]
                decimal_id = str(NEXT_ID[0])
                NEXT_ID[0] += 1
                say(
                    "SUBMIT",
                    p["destination_addr"].decode(),
                    p["data_coding"].schemeData.name,
                    str(p["esm_class"].type.name),
                    p["short_message"].hex(),
                )
                writer.write(
                    ENC.encode(op.SubmitSMResp(seqNum=sequence, message_id=msg_id))
                )
                now = datetime.now(timezone.utc).strftime("%y%m%d%H%M")
                text = (
                    "id:%s sub:001 dlvrd:001 submit date:%s done date:%s stat:DELIVRD err:000 text:"
                    % (decimal_id, now, now)
                )
                out_seq += 1
                writer.write(
                    ENC.encode(
                        op.DeliverSM(
                            seqNum=out_seq,
                            source_addr=p["destination_addr"],
                            destination_addr=p["source_addr"],
                            esm_class=t.EsmClass(
                                t.EsmClassMode.DEFAULT, t.EsmClassType.SMSC_DELIVERY_RECEIPT
                            ),
                            short_message=text.encode(),
                            receipted_message_id=msg_id,
                            message_state=t.MessageState.DELIVERED,
                        )
                    )
                )
            elif cid == t.CommandId.deliver_sm_resp:
                say("DELIVER_SM_RESP", pdu.status.name)
            elif cid == t.CommandId.unbind:
                say("UNBIND")
                writer.write(ENC.encode(op.UnbindResp(seqNum=sequence)))
                await writer.drain()
                break
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    except Exception:  # report, so a failing test says why
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    say("PORT", server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
