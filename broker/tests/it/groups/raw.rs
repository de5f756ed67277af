//! A session that sends bytes that are no `GroupRequest`.
use bytes::{Buf, BufMut, Bytes};
use tokio_stream::StreamExt as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};

#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Opens a session whose first message is garbage; returns the status
/// it ends with.
pub async fn send_garbage(endpoint: String) -> anyhow::Result<Status> {
    let channel = tonic::transport::Channel::from_shared(endpoint)?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    // An endless varint: no protobuf decoder accepts it.
    let garbage = Bytes::from(vec![0xff_u8; 32]);
    let requests = tokio_stream::iter([garbage]).chain(tokio_stream::pending());
    let path = PathAndQuery::from_static("/brook.v1.GroupService/Session");
    let response = grpc
        .streaming(tonic::Request::new(requests), path, RawCodec)
        .await;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(status),
    };
    loop {
        match crate::common::within("the garbage session's end", stream.message()).await? {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(Status::new(Code::Ok, "ended without an error")),
            Err(status) => return Ok(status),
        }
    }
}
