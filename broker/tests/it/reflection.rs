//! Server reflection lists Brook's services under both protocol versions
//! tools use (`grpc.reflection.v1` and `v1alpha`), so grpcurl works without
//! the `.proto` files.

use crate::common;

use brook_broker::EmbeddedBroker;
use tonic::transport::Channel;
use tonic_reflection::pb::{v1, v1alpha};

const EXPECTED: [&str; 6] = [
    "brook.v1.AdminService",
    "brook.v1.ProduceService",
    "brook.v1.FetchService",
    "brook.v1.GroupService",
    "brook.v1.QuotaService",
    "grpc.health.v1.Health",
];

async fn channel(embedded: &EmbeddedBroker) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(embedded.endpoint())?.connect().await?)
}

#[tokio::test]
async fn reflection_v1_lists_the_services() -> anyhow::Result<()> {
    let embedded = EmbeddedBroker::start().await?;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(channel(&embedded).await?);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = common::within("reflection", responses.message()).await??;
    let Some(v1::ServerReflectionResponse {
        message_response:
            Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)),
        ..
    }) = response
    else {
        anyhow::bail!("unexpected reflection response: {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in EXPECTED {
        anyhow::ensure!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services() -> anyhow::Result<()> {
    let embedded = EmbeddedBroker::start().await?;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&embedded).await?);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = common::within("reflection", responses.message()).await??;
    let Some(v1alpha::ServerReflectionResponse {
        message_response:
            Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)),
        ..
    }) = response
    else {
        anyhow::bail!("unexpected reflection response: {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in EXPECTED {
        anyhow::ensure!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    Ok(())
}
