//! The producer's own produce stream. The sender task writes each request
//! into the gRPC request body and reads the answers itself, matching them
//! to its requests in order: no task, channel or timer per request in
//! between.
//!
//! Invariants: `awaiting` holds every request sent on the stream and not
//! yet answered, in send order (the broker appends a stream's requests in
//! the order they arrived and answers them in that order, which keeps a
//! partition's batches in sequence order). It never holds more requests
//! than the capacity the stream was opened with, which is also the request
//! channel's, so a request never waits for room in the channel.
//!
//! Requests are encoded from the client's own message type, field for
//! field the `brook.v1.ProduceRequest` of the wire protocol, but with the
//! topic as shared bytes, so that a batch's request does not copy its
//! topic name (a protobuf `string` and `bytes` field are encoded alike).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use brook_proto::ProduceResponse;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::codegen::http::uri::PathAndQuery;

use super::TopicPartition;
use crate::client::Client;
use crate::error::ClientError;

pub(crate) use crate::stream::OPERATION;
use crate::stream::out_of_order;

/// `brook.v1.ProduceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WireRequest {
    #[prost(uint64, tag = "1")]
    pub(crate) correlation_id: u64,
    #[prost(message, repeated, tag = "2")]
    pub(crate) batches: Vec<WireBatch>,
}

/// `brook.v1.PartitionBatch`; `topic` holds the UTF-8 of the topic name.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WireBatch {
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) topic: Bytes,
    #[prost(uint32, tag = "2")]
    pub(crate) partition: u32,
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) batch: Bytes,
}

/// A request sent and not yet answered.
#[derive(Debug)]
pub(crate) struct InFlight {
    correlation_id: u64,
    /// The partition and id of each batch, in request order; empty once
    /// given up.
    pub(crate) batches: Vec<(TopicPartition, u64)>,
    /// When it was sent: the stream ends if its answer is not back within
    /// the request timeout of that.
    sent_at: Instant,
    /// When the delivery timeouts of all its batches have run out: they are
    /// answered then, and the answer, when it comes, only frees its place.
    give_up_at: Instant,
}

impl InFlight {
    fn given_up(&self) -> bool {
        self.batches.is_empty()
    }
}

/// An open produce stream and the requests awaiting their answers.
#[derive(Debug)]
pub(crate) struct ProducerStream {
    /// The request body. Never full: its capacity is the bound on `awaiting`.
    requests: mpsc::Sender<WireRequest>,
    responses: Streaming<ProduceResponse>,
    awaiting: VecDeque<InFlight>,
    capacity: usize,
    next_correlation_id: u64,
    /// The request side ended (the body was dropped): nothing more can be
    /// sent, but answers to what was sent may still arrive, so the stream
    /// is read to its end before it is closed.
    draining: bool,
    /// Whether any request was answered, to tell a stream that worked from
    /// one that ended before answering anything (reopened after a backoff).
    answered: bool,
}

/// Why a request was not sent; its batches are given back.
#[derive(Debug)]
pub(crate) enum Unsent {
    /// The request side of the stream ended.
    Closed(Vec<(TopicPartition, u64)>),
    /// The request body was full although no more requests await answers
    /// than it holds: the broker answered requests it had not read, so it
    /// broke the protocol.
    Broken(Vec<(TopicPartition, u64)>),
}

/// Opens a produce stream for at most `capacity` requests awaiting answers.
pub(crate) async fn open(
    client: &Client,
    capacity: usize,
) -> Result<Box<ProducerStream>, ClientError> {
    assert!(capacity > 0, "a stream needs room for one request");
    let (requests, body) = mpsc::channel(capacity);
    let limit = client.options.message_bytes_max;
    let mut grpc = tonic::client::Grpc::new(client.channel.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let call = async move {
        grpc.ready()
            .await
            .map_err(|error| tonic::Status::unknown(format!("service was not ready: {error}")))?;
        let codec = tonic_prost::ProstCodec::<WireRequest, ProduceResponse>::default();
        let path = PathAndQuery::from_static("/brook.v1.ProduceService/ProduceStream");
        grpc.streaming(tonic::Request::new(ReceiverStream::new(body)), path, codec)
            .await
    };
    let responses = client
        .rpc(OPERATION, client.options.request_timeout, call)
        .await?;
    // Boxed: it is large, and moves between the sender's states.
    Ok(Box::new(ProducerStream {
        requests,
        responses,
        awaiting: VecDeque::with_capacity(capacity),
        capacity,
        next_correlation_id: 1,
        draining: false,
        answered: false,
    }))
}

impl ProducerStream {
    /// Requests awaiting an answer, given up ones included.
    pub(crate) fn in_flight(&self) -> usize {
        self.awaiting.len()
    }

    /// Whether a request whose batches are not answered yet awaits its answer.
    pub(crate) fn has_live_requests(&self) -> bool {
        self.awaiting.iter().any(|request| !request.given_up())
    }

    /// Whether requests may be sent: the request side is open and fewer
    /// than `capacity` requests await answers.
    pub(crate) fn has_room(&self) -> bool {
        !self.draining && self.awaiting.len() < self.capacity
    }

    /// Whether the request side ended while answers may still come.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining
    }

    /// Whether any request was answered on this stream.
    pub(crate) fn answered_any(&self) -> bool {
        self.answered
    }

    /// Sends a request of `batches`; gives the keys back if it could not
    /// go out, so nothing was sent. After `Unsent::Closed` the stream only
    /// drains: it takes no more requests.
    pub(crate) fn send(
        &mut self,
        batches: Vec<WireBatch>,
        keys: Vec<(TopicPartition, u64)>,
        give_up_at: Instant,
        now: Instant,
    ) -> Result<(), Unsent> {
        assert!(
            self.has_room(),
            "the sender sends only while the stream has room"
        );
        let correlation_id = self.next_correlation_id;
        let request = WireRequest {
            correlation_id,
            batches,
        };
        match self.requests.try_send(request) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.draining = true;
                return Err(Unsent::Closed(keys));
            }
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Unsent::Broken(keys)),
        }
        self.next_correlation_id += 1;
        self.awaiting.push_back(InFlight {
            correlation_id,
            batches: keys,
            sent_at: now,
            give_up_at,
        });
        Ok(())
    }

    /// The next answer. Cancel-safe: an answer not taken now is taken on
    /// the next call.
    pub(crate) async fn message(&mut self) -> Result<Option<ProduceResponse>, tonic::Status> {
        self.responses.message().await
    }

    /// The request `response` answers: the oldest awaiting one, which must
    /// carry the response's correlation id. An error says how the broker
    /// broke the protocol; the stream cannot be trusted after it.
    pub(crate) fn answered(&mut self, response: &ProduceResponse) -> Result<InFlight, String> {
        match self.awaiting.pop_front() {
            Some(oldest) if oldest.correlation_id == response.correlation_id => {
                self.answered = true;
                Ok(oldest)
            }
            oldest => {
                let expected = oldest.as_ref().map(|oldest| oldest.correlation_id);
                if let Some(oldest) = oldest {
                    self.awaiting.push_front(oldest);
                }
                Err(out_of_order(expected, response.correlation_id))
            }
        }
    }

    /// The batches of every request whose delivery timeouts ran out by
    /// `now`, taken from them: their requests stay until answered.
    pub(crate) fn give_up(&mut self, now: Instant) -> Vec<(TopicPartition, u64)> {
        self.awaiting
            .iter_mut()
            .filter(|request| !request.given_up() && request.give_up_at <= now)
            .flat_map(|request| std::mem::take(&mut request.batches))
            .collect()
    }

    /// Whether the oldest request's answer is more than `request_timeout` late.
    pub(crate) fn is_late(&self, now: Instant, request_timeout: Duration) -> bool {
        self.awaiting
            .front()
            .is_some_and(|oldest| crate::deadline::after(oldest.sent_at, request_timeout) <= now)
    }

    /// When [`Self::give_up`] or [`Self::is_late`] next has something to say.
    pub(crate) fn next_deadline(&self, request_timeout: Duration) -> Option<Instant> {
        let late = self
            .awaiting
            .front()
            .map(|oldest| crate::deadline::after(oldest.sent_at, request_timeout));
        self.awaiting
            .iter()
            .filter(|request| !request.given_up())
            .map(|request| request.give_up_at)
            .chain(late)
            .min()
    }

    /// Ends the stream: the batches of every request still awaiting an
    /// answer, in send order.
    pub(crate) fn close(self: Box<Self>) -> impl Iterator<Item = Vec<(TopicPartition, u64)>> {
        self.awaiting
            .into_iter()
            .filter(|request| !request.given_up())
            .map(|request| request.batches)
    }
}
