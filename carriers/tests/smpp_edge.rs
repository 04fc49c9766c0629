//! The SMPP client against a scripted SMSC (a raw socket speaking through
//! Herald's PDU codec) for the cases the simulator does not produce:
//! generic_nack answers, unbind from the SMSC, unknown commands, a corrupt
//! stream.

use std::time::Duration;

use bytes::BytesMut;
use herald_carriers::smpp::pdu::{self, status, BindResp, Body, Pdu};
use herald_carriers::smpp::{SmppClient, SmppConfig};
use herald_carriers::{CarrierConnection, CarrierError, Channel, Content, Submission};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One scripted SMSC connection: answers the bind, then hands the socket to
/// the script.
struct Smsc {
    stream: TcpStream,
    buf: BytesMut,
}

impl Smsc {
    async fn read(&mut self) -> Pdu {
        loop {
            if let Some(p) = pdu::try_decode(&mut self.buf).expect("valid PDU") {
                return p;
            }
            let n =
                tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("client speaks in time")
                    .expect("readable");
            assert!(n > 0, "client closed");
        }
    }

    async fn write(&mut self, p: Pdu) {
        self.write_raw(&p.to_bytes()).await;
    }

    async fn write_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.expect("writable");
    }
}

async fn scripted() -> (SmppClient, Smsc) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut smsc = Smsc {
            stream,
            buf: BytesMut::new(),
        };
        let bind = smsc.read().await;
        assert!(matches!(bind.body, Body::BindTransceiver(_)));
        smsc.write(Pdu::new(
            bind.sequence,
            Body::BindTransceiverResp(BindResp {
                system_id: "scripted".into(),
                tlvs: vec![],
            }),
        ))
        .await;
        smsc
    });
    let (client, _receipts) = SmppClient::connect(SmppConfig {
        port,
        system_id: "herald".into(),
        password: "secret".into(),
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .expect("binds");
    (client, accept.await.unwrap())
}

fn sms() -> Submission {
    Submission {
        message_id: "msg_1".into(),
        channel: Channel::Sms,
        to: "+250788123456".into(),
        from: "Herald".into(),
        content: Content::Text {
            body: "hello".into(),
        },
        validity: None,
        receipts: false,
    }
}

#[tokio::test]
async fn generic_nack_answers_the_submit() {
    let (client, mut smsc) = scripted().await;
    let submit = tokio::spawn(async move {
        let r = client.submit(sms()).await;
        (client, r)
    });
    let p = smsc.read().await;
    assert!(matches!(p.body, Body::SubmitSm(_)));
    // A response to nothing pending is ignored.
    smsc.write(Pdu::new(
        p.sequence + 1000,
        Body::SubmitSmResp(Default::default()),
    ))
    .await;
    smsc.write(Pdu::with_status(
        p.sequence,
        status::ESME_RINVCMDLEN,
        Body::GenericNack,
    ))
    .await;
    let (client, r) = submit.await.unwrap();
    match r {
        Err(CarrierError::Permanent { code, text }) => {
            assert_eq!(code, "0x00000002");
            assert_eq!(text, "ESME_RINVCMDLEN");
        }
        other => panic!("{other:?}"),
    }
    assert!(client.health().bound);
}

#[tokio::test]
async fn unknown_commands_are_nacked_and_enquire_link_answered() {
    let (client, mut smsc) = scripted().await;
    // data_sm (0x103), which Herald does not speak.
    smsc.write(Pdu::new(
        77,
        Body::Unknown {
            command_id: 0x0000_0103,
            body: bytes::Bytes::from_static(b"\0\0\0"),
        },
    ))
    .await;
    let nack = smsc.read().await;
    assert_eq!(nack.sequence, 77);
    assert_eq!(nack.status, status::ESME_RINVCMDID);
    assert_eq!(nack.body, Body::GenericNack);
    smsc.write(Pdu::new(78, Body::EnquireLink)).await;
    let resp = smsc.read().await;
    assert_eq!((resp.sequence, resp.body), (78, Body::EnquireLinkResp));
    // A submit_sm with a body cut short is nacked too, and the stream goes on.
    smsc.write_raw(&[0, 0, 0, 18, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 79, b'x', b'y'])
        .await;
    let nack = smsc.read().await;
    assert_eq!((nack.sequence, nack.status), (79, status::ESME_RINVCMDLEN));
    assert!(client.health().bound);
}

#[tokio::test]
async fn unbind_from_the_smsc_ends_the_connection() {
    let (client, mut smsc) = scripted().await;
    smsc.write(Pdu::new(5, Body::Unbind)).await;
    let resp = smsc.read().await;
    assert_eq!((resp.sequence, resp.body), (5, Body::UnbindResp));
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), client.lost())
            .await
            .unwrap(),
        "unbound by the SMSC"
    );
    assert!(matches!(
        client.submit(sms()).await,
        Err(CarrierError::ConnectionLost { .. })
    ));
}

#[tokio::test]
async fn a_corrupt_stream_ends_the_connection() {
    let (client, mut smsc) = scripted().await;
    let submit = tokio::spawn(async move {
        let r = client.submit(sms()).await;
        (client, r)
    });
    let _ = smsc.read().await;
    // command_length 3: the stream cannot be resynchronised.
    smsc.write_raw(&[0, 0, 0, 3, 1, 2, 3, 4]).await;
    let (client, r) = submit.await.unwrap();
    assert!(
        matches!(r, Err(CarrierError::ConnectionLost { .. })),
        "{r:?}"
    );
    assert!(client.lost().await.starts_with("unrecoverable stream"));
}
