//! The JSON bodies of the Open Inference Protocol (KServe v2) as goten serves it, and the
//! attestation extension's body.
//!
//! Where it sits: shared by the HTTP front end ([`super::http`]) and the client
//! ([`super::client`]). A request's single input is a `BYTES` tensor named `query` whose
//! elements are sealed queries (`goten_enclave::query`), each base64-encoded (standard
//! alphabet, padded); the response's single output `answer` carries the sealed answers in the
//! same order. DESIGN.md section 21 documents the exchange end to end.

use serde::{Deserialize, Serialize};

/// Name of the request's input tensor.
pub const INPUT: &str = "query";
/// Name of the response's output tensor.
pub const OUTPUT: &str = "answer";
/// The OIP datatype of both.
pub const BYTES: &str = "BYTES";

/// One tensor of a request or a response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tensor {
    /// Its name.
    pub name: String,
    /// Its shape (`[n]`: n sealed messages).
    pub shape: Vec<i64>,
    /// Its datatype (`BYTES`).
    pub datatype: String,
    /// The base64 strings.
    pub data: Vec<String>,
}

/// `POST /v2/models/{name}/infer` request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Ignored (accepted for compatibility with OIP clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// Exactly one: [`INPUT`].
    pub inputs: Vec<Tensor>,
    /// Ignored when present (the only output is [`OUTPUT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<serde_json::Value>,
}

/// `POST /v2/models/{name}/infer` response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InferResponse {
    /// The model's name.
    pub model_name: String,
    /// The request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Exactly one: [`OUTPUT`].
    pub outputs: Vec<Tensor>,
}

/// A tensor's metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TensorMeta {
    /// Its name.
    pub name: String,
    /// Its datatype.
    pub datatype: String,
    /// Its shape (-1: any).
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}` response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// Versions served (one).
    pub versions: Vec<String>,
    /// `goten-sealed`: the tensors are sealed messages, not the model's own tensors.
    pub platform: String,
    /// [`INPUT`].
    pub inputs: Vec<TensorMeta>,
    /// [`OUTPUT`].
    pub outputs: Vec<TensorMeta>,
    /// What is inside the seal.
    pub parameters: SealedParameters,
}

/// What the sealed tensors hold: the model's real input and output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SealedParameters {
    /// The architecture.
    pub kind: String,
    /// One image inside a query: `[channels, height, width]` of 8-bit pixels.
    pub image_shape: Vec<usize>,
    /// Logits per image inside an answer.
    pub classes: usize,
    /// Most images in one sealed query.
    pub max_images_per_query: usize,
    /// Where the formats are documented.
    pub format: String,
}

/// One enclave's evidence in the attestation extension.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoleEvidence {
    /// `S0` or `S1`.
    pub role: String,
    /// Evidence in goten's encoding (`goten_party::wire::encode_evidence`), hex.
    pub evidence: String,
}

/// Roots of simulated evidence (present only when the cluster is simulated).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimulatedRoots {
    /// The simulated platform keys, hex: the server supplies them itself, so they prove
    /// nothing about the platform.
    pub platform_keys: Vec<String>,
    /// The measurement the cluster expects, hex.
    pub measurement: String,
    /// Says so.
    pub warning: String,
}

/// `GET /v2/models/{name}/attestation?nonce=HEX` response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attestation {
    /// The model's name.
    pub model: String,
    /// The service key queries are sealed to, hex.
    pub service_key: String,
    /// The client's nonce, hex (the evidence binds it).
    pub nonce: String,
    /// E0's and E1's evidence.
    pub evidence: Vec<RoleEvidence>,
    /// Present in simulation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<SimulatedRoots>,
}

/// The body of every error response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, and whose fault it is.
    pub error: String,
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of hex text (either case), or `None`.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
