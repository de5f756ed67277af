//! Payload codecs: how an event becomes the record's value and back.
//!
//! Invariant: a codec sees only the payload bytes; the envelope (type,
//! version, id, time) lives in headers and is none of its business.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a payload did not encode or decode, as the codec's own error.
pub type CodecError = Box<dyn std::error::Error + Send + Sync>;

/// Turns a `T` into payload bytes and back.
pub trait Codec<T> {
    /// The MIME type written to the `contentType` header.
    const CONTENT_TYPE: &'static str;

    /// The payload bytes of `value`.
    fn encode(value: &T) -> Result<Bytes, CodecError>;

    /// A `T` from payload bytes.
    fn decode(bytes: &[u8]) -> Result<T, CodecError>;
}

/// JSON through serde, as `application/json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for JsonCodec {
    const CONTENT_TYPE: &'static str = "application/json";

    fn encode(value: &T) -> Result<Bytes, CodecError> {
        Ok(Bytes::from(serde_json::to_vec(value)?))
    }

    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// Protocol Buffers through prost, as `application/x-protobuf`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProtobufCodec;

impl<T: prost::Message + Default> Codec<T> for ProtobufCodec {
    const CONTENT_TYPE: &'static str = "application/x-protobuf";

    fn encode(value: &T) -> Result<Bytes, CodecError> {
        Ok(Bytes::from(value.encode_to_vec()))
    }

    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        Ok(T::decode(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Json {
        id: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Proto {
        #[prost(uint32, tag = "1")]
        id: u32,
    }

    #[test]
    fn json_round_trips_and_rejects_garbage() {
        let bytes = <JsonCodec as Codec<Json>>::encode(&Json { id: 7 }).expect("encodes");
        assert_eq!(&bytes[..], br#"{"id":7}"#);
        let back: Json = JsonCodec::decode(&bytes).expect("decodes");
        assert_eq!(back, Json { id: 7 });
        assert!(<JsonCodec as Codec<Json>>::decode(b"\xff{").is_err());
    }

    #[test]
    fn protobuf_round_trips_and_rejects_garbage() {
        let bytes = <ProtobufCodec as Codec<Proto>>::encode(&Proto { id: 7 }).expect("encodes");
        let back: Proto = ProtobufCodec::decode(&bytes).expect("decodes");
        assert_eq!(back, Proto { id: 7 });
        assert!(<ProtobufCodec as Codec<Proto>>::decode(b"\xff\xff\xff").is_err());
    }
}
