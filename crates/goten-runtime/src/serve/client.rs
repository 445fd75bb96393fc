//! The querying user's side: verify the serving enclaves, seal images, open the answers.
//!
//! Where it sits: on the user's machine (`goten query`, tests, the serving benchmark). It
//! trusts only enclaves whose evidence verifies against what the user pinned (the cluster
//! file's verifier, or an expected measurement), and sends nothing but sealed queries.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use goten_enclave::Role;
use goten_enclave::attest::{EvidenceVerifier, SimulatedVerifier};
use goten_enclave::query::{self, Answer};
use goten_enclave::service::service_report_data;

use super::oip::{self, Attestation, InferRequest, InferResponse, ModelMetadata, Tensor};

/// Why a query failed, and on whose side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server's evidence does not verify: the client refuses to send anything.
    #[error("refusing the server: {0}")]
    Untrusted(String),
    /// The server answered with an error (its status and message).
    #[error("the server answered {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The server could not be reached or sent something unreadable.
    #[error("{0}")]
    Net(String),
    /// The user's input is unusable.
    #[error("{0}")]
    Input(String),
}

/// What the user pins.
pub enum Pin {
    /// A verifier built from the cluster file (simulated platform keys and measurement, or
    /// the TEE policy and collateral).
    Verifier(Box<dyn EvidenceVerifier>),
    /// An expected measurement: hardware evidence needs the cluster file's policy, simulated
    /// evidence is checked against the platform keys the server itself supplies (which proves
    /// only that the server runs the expected program in simulation).
    Measurement([u8; 32]),
}

/// A server whose enclaves verified.
pub struct Verified {
    /// Base URL.
    pub base: String,
    /// The model's name.
    pub model: String,
    /// The model's sealed-tensor parameters.
    pub params: oip::SealedParameters,
    /// The attested service key.
    pub service_key: [u8; 32],
    /// Whether the evidence was simulated.
    pub simulated: bool,
    agent: ureq::Agent,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

fn read_json<T: serde::de::DeserializeOwned>(
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    what: &str,
) -> Result<T, ClientError> {
    let mut resp = resp.map_err(|e| ClientError::Net(format!("{what}: {e}")))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .map_err(|e| ClientError::Net(format!("{what}: {e}")))?;
    if status != 200 {
        let message = serde_json::from_slice::<oip::ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(ClientError::Server { status, message });
    }
    serde_json::from_slice(&body)
        .map_err(|e| ClientError::Net(format!("{what}: unreadable answer: {e}")))
}

fn untrusted(m: impl Into<String>) -> ClientError {
    ClientError::Untrusted(m.into())
}

/// Fetches the model's metadata and both enclaves' evidence for a fresh nonce, and checks
/// them against `pin`. Nothing secret has been sent when this fails.
pub fn connect(
    base: &str,
    model: &str,
    pin: &Pin,
    timeout: Duration,
) -> Result<Verified, ClientError> {
    let base = base.trim_end_matches('/').to_string();
    let agent = agent(timeout);
    let meta: ModelMetadata = read_json(
        agent.get(format!("{base}/v2/models/{model}")).call(),
        "model metadata",
    )?;
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| ClientError::Input(format!("no entropy: {e}")))?;
    let att: Attestation = read_json(
        agent
            .get(format!(
                "{base}/v2/models/{model}/attestation?nonce={}",
                oip::hex(&nonce)
            ))
            .call(),
        "attestation",
    )?;
    let service_key: [u8; 32] = oip::unhex(&att.service_key)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| untrusted("the service key is not 32 bytes of hex"))?;
    let simulated_verifier;
    let verifier: &dyn EvidenceVerifier = match pin {
        Pin::Verifier(v) => v.as_ref(),
        Pin::Measurement(m) => {
            let roots = att.simulated.as_ref().ok_or_else(|| {
                untrusted("hardware evidence: pass the cluster file (--cluster) for its TEE policy and collateral")
            })?;
            let keys = roots
                .platform_keys
                .iter()
                .map(|k| oip::unhex(k).and_then(|b| b.try_into().ok()))
                .collect::<Option<Vec<[u8; 32]>>>()
                .ok_or_else(|| untrusted("malformed simulated platform keys"))?;
            simulated_verifier =
                SimulatedVerifier::any_of(&keys, *m).map_err(|e| untrusted(e.to_string()))?;
            &simulated_verifier
        }
    };
    let mut simulated = false;
    for role in [Role::S0, Role::S1] {
        let e = att
            .evidence
            .iter()
            .find(|e| e.role == role.to_string())
            .ok_or_else(|| untrusted(format!("no evidence from {role}'s enclave")))?;
        let ev = oip::unhex(&e.evidence)
            .ok_or_else(|| untrusted(format!("{role}'s evidence is not hex")))
            .and_then(|b| {
                goten_party::wire::decode_evidence(&b)
                    .map_err(|e| untrusted(format!("{role}'s evidence: {e}")))
            })?;
        simulated |= ev.is_simulated();
        verifier
            .verify(&ev, &service_report_data(role, &service_key, &nonce))
            .map_err(|e| untrusted(format!("{role}'s enclave: {e}")))?;
    }
    Ok(Verified {
        base,
        model: meta.name,
        params: meta.parameters,
        service_key,
        simulated,
        agent,
    })
}

/// The answers to `images` and the seconds each request took.
pub struct Scored {
    /// One answer per request, in order.
    pub answers: Vec<Answer>,
    /// Seconds per request.
    pub latencies: Vec<f64>,
}

impl Verified {
    /// Seals `images` (`per_query` per sealed query, one query per request), sends them one
    /// request after another, and opens the answers.
    pub fn score(&self, images: &[&[u8]], per_query: usize) -> Result<Scored, ClientError> {
        let shape: [usize; 3] = self
            .params
            .image_shape
            .clone()
            .try_into()
            .map_err(|_| ClientError::Net("the model's image shape is not 3-D".into()))?;
        let mut out = Scored {
            answers: Vec::new(),
            latencies: Vec::new(),
        };
        for chunk in images.chunks(per_query.clamp(1, self.params.max_images_per_query)) {
            let t = Instant::now();
            out.answers.push(self.query_once(shape, chunk)?);
            out.latencies.push(t.elapsed().as_secs_f64());
        }
        Ok(out)
    }

    /// The model owner's side: seals `export` (names as in goten's export) to the attested
    /// service key and provisions it to the enclaves, which load it and store their own sealed
    /// copies. Nothing but the sealed model leaves this machine.
    pub fn provision_model(
        &self,
        export: &goten_enclave::session::Export,
    ) -> Result<(), ClientError> {
        let sealed =
            goten_enclave::session::model_out::seal_model_to_service(export, &self.service_key)
                .map_err(|e| ClientError::Input(e.to_string()))?;
        let _: serde_json::Value = read_json(
            self.agent
                .post(format!("{}/v2/models/{}/provision", self.base, self.model))
                .header("content-type", "application/octet-stream")
                .send(&sealed[..]),
            "provisioning",
        )?;
        Ok(())
    }

    /// One request holding one sealed query of `images`.
    pub fn query_once(&self, shape: [usize; 3], images: &[&[u8]]) -> Result<Answer, ClientError> {
        let (sealed, key) = query::seal_query(&self.service_key, &self.model, shape, images)
            .map_err(|e| ClientError::Input(e.to_string()))?;
        let body = InferRequest {
            id: None,
            parameters: None,
            inputs: vec![Tensor {
                name: oip::INPUT.into(),
                shape: vec![1],
                datatype: oip::BYTES.into(),
                data: vec![STANDARD.encode(&sealed)],
            }],
            outputs: None,
        };
        let json = serde_json::to_vec(&body).map_err(|e| ClientError::Input(e.to_string()))?;
        let resp: InferResponse = read_json(
            self.agent
                .post(format!("{}/v2/models/{}/infer", self.base, self.model))
                .header("content-type", "application/json")
                .send(&json[..]),
            "inference",
        )?;
        let [out] = resp.outputs.as_slice() else {
            return Err(ClientError::Net("the answer has no single output".into()));
        };
        let [data] = out.data.as_slice() else {
            return Err(ClientError::Net("the answer has no single element".into()));
        };
        let bytes = STANDARD
            .decode(data)
            .map_err(|e| ClientError::Net(format!("the answer is not base64: {e}")))?;
        let a = query::open_answer(&key, &sealed, &bytes)
            .map_err(|e| ClientError::Net(format!("the answer does not open: {e}")))?;
        if a.count() != images.len() {
            return Err(ClientError::Net(format!(
                "{} answers for {} images",
                a.count(),
                images.len()
            )));
        }
        Ok(a)
    }
}
