//! The agent protocol (`proto/agent.proto`), generated at build time, and the gRPC error detail
//! that carries a `PulumiErrorInfo` the way grpc-go does.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("agent");

use prost::Message;

/// `google.rpc.Status`: what grpc-go puts, encoded, in the `grpc-status-details-bin` trailer.
/// Go clients read `status.FromError(err).Details()` from it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// `UpdateSummary.result` of an operation that succeeded (the CLI's history value; the others
/// are `failed` and `in-progress`).
pub const RESULT_SUCCEEDED: &str = "succeeded";

/// `creating urn:…, updating urn:…`: the first few of an interrupted update's pending
/// operations, as the agent's refusal and the operator's event both name them.
pub fn describe_pending(ops: &[PendingOperation]) -> String {
    const SHOWN: usize = 5;
    let mut s = ops
        .iter()
        .take(SHOWN)
        .map(|o| format!("{} {}", o.r#type, o.urn))
        .collect::<Vec<_>>()
        .join(", ");
    if ops.len() > SHOWN {
        s.push_str(&format!(" and {} more", ops.len() - SHOWN));
    }
    s
}

/// The type URL grpc-go resolves `PulumiErrorInfo` by; package `agent` as in PKO.
pub const PULUMI_ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/agent.PulumiErrorInfo";

/// A gRPC status whose first detail is `info`, readable by PKO's operator as well as ours.
pub fn status_with_error_info(
    code: tonic::Code,
    message: String,
    info: &PulumiErrorInfo,
) -> tonic::Status {
    let details = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: PULUMI_ERROR_INFO_TYPE_URL.to_string(),
            value: info.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(code, message, details.encode_to_vec().into())
}

/// The first `PulumiErrorInfo` detail of a status, if it has one.
pub fn error_info(status: &tonic::Status) -> Option<PulumiErrorInfo> {
    let details = status.details();
    if details.is_empty() {
        return None;
    }
    let rpc = RpcStatus::decode(details).ok()?;
    let first = rpc.details.first()?;
    if first.type_url != PULUMI_ERROR_INFO_TYPE_URL {
        return None;
    }
    PulumiErrorInfo::decode(first.value.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_info_round_trips_through_the_status_details() {
        let info = PulumiErrorInfo {
            code: 409,
            reason: "UpdateConflict".into(),
            message: "Another update is currently in progress".into(),
        };
        let st = status_with_error_info(tonic::Code::Unknown, "up failed: conflict".into(), &info);
        assert_eq!(st.code(), tonic::Code::Unknown);
        assert_eq!(error_info(&st), Some(info));
        assert_eq!(error_info(&tonic::Status::unknown("plain")), None);
    }
}
