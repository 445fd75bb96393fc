//! The serving session: a trained model inside E0 and E1 answering sealed queries.
//!
//! Where it sits: inside the enclaves of a serving cluster, beside the training session. The
//! host opens it from the enclave's sealed checkpoint of a goten-mode run (no host ever reads
//! the model), compares state tags with the peer, then hands it batches of sealed queries
//! ([`crate::query`]). The session opens each with the attested service key, refuses replays
//! and malformed queries (the refusal reason is public, never the content), runs the forward
//! pass in evaluation mode with every linear layer outsourced through the same protocol as
//! training, and seals each query's logits to the key its user chose. The host gets
//! ciphertext and refusal messages only; S2 and the devices see one-time-padded shares.

use std::collections::HashSet;

use hmac::Mac;

use super::{SessionError, StateTag};
use crate::linear::HostServices;
use crate::nn::checkpoint;
use crate::nn::{Model, ProtocolBackend};
use crate::query::{self, QueryError};
use crate::{KeyedEnclave, Role};

/// Queries remembered for replay detection before the session refuses new ones: 4 Mi sealed
/// queries (128 MiB of keys); a server restarted after that many starts a fresh session (a new
/// service key, so old queries cannot be replayed into it either).
pub const MAX_REMEMBERED: usize = 4 << 20;

/// Most images in one sealed query (the enclave refuses more; the front end advertises it).
pub const MAX_IMAGES_PER_QUERY: usize = 1024;

/// What the model takes and gives: public facts the host publishes as the model's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// The architecture (a built-in model name such as `small`, `vgg11`, `resnet20`).
    pub kind: &'static str,
    /// Input shape of one image `[channels, height, width]`, 8-bit pixels.
    pub input: [usize; 3],
    /// Output classes (logits per image).
    pub classes: usize,
}

/// Whether `name` can name a served model (it appears in URLs and binds queries).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The outcome for one sealed query: its sealed answer, or why it was refused.
pub type Reply = Result<Vec<u8>, QueryError>;

/// A model being served by one enclave of the pair. Debug output is redacted.
pub struct ServeSession<'k> {
    enclave: &'k KeyedEnclave,
    model: Model,
    name: String,
    classes: usize,
    /// Images per forward pass (a batch larger than this is split).
    batch: usize,
    /// PRG step counter: one per forward pass, never repeated within the key exchange.
    counter: u64,
    seen: HashSet<[u8; 32]>,
    /// How queries are normalised: as the model's training data was (sealed in its
    /// checkpoint), CIFAR-10's statistics for older checkpoints and owner-provisioned models.
    spec: crate::nn::input::InputSpec,
}

impl std::fmt::Debug for ServeSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServeSession({} as {:?}, {} queries seen, <model redacted>)",
            self.model.arch_name(),
            self.name,
            self.seen.len()
        )
    }
}

impl<'k> ServeSession<'k> {
    /// Ecall "serve a checkpoint": opens this enclave's sealed checkpoint (under the platform
    /// sealing key and this enclave's role) and serves its model under the name `name` (default:
    /// the model kind), at most `batch` images per forward pass. The class count comes from the
    /// checkpoint; `classes` is used only for checkpoints older than format 5, which lack it.
    pub fn from_checkpoint(
        enclave: &'k KeyedEnclave,
        sealing: &goten_field::SecretKey,
        sealed: &[u8],
        classes: usize,
        name: Option<&str>,
        batch: usize,
    ) -> Result<Self, SessionError> {
        let r = checkpoint::unseal_for_serving(sealed, sealing, enclave.role_label(), classes)?;
        Self::with_model(enclave, r.model, (name, batch))
    }

    /// Ecall "serve the owner's model": opens a model the model owner sealed to the service key
    /// (`model_out::seal_model_to_service`, names as in the export), loads it into a `kind`
    /// network, and seals it under the platform key as this enclave's checkpoint, returned for
    /// the host to store: a restarted cluster serves it without the owner.
    pub fn from_owner(
        enclave: &'k KeyedEnclave,
        sealing: &goten_field::SecretKey,
        sealed_model: &[u8],
        kind: crate::nn::ModelKind,
        (classes, name, batch): (usize, Option<&str>, usize),
    ) -> Result<(Self, Vec<u8>), SessionError> {
        let e = super::model_out::open_provisioned_model(sealed_model, enclave.service_key())
            .map_err(|why| SessionError::Reported {
                fault: super::Fault::Data,
                message: format!("the model owner's model: {why}"),
            })?;
        let mut model = kind.build(0, classes)?;
        crate::nn::export::import_named(&mut model, &e.tensors).map_err(|err| {
            SessionError::Reported {
                fault: super::Fault::Data,
                message: format!(
                    "the model owner's model does not fit {}: {err}",
                    kind.name()
                ),
            }
        })?;
        let sealed = checkpoint::seal(
            &mut model,
            checkpoint::Progress::default(),
            [0; 32],
            None,
            sealing,
            enclave.role_label(),
        )?;
        let session = Self::with_model(enclave, model, (name, batch))?;
        Ok((session, sealed))
    }

    fn with_model(
        enclave: &'k KeyedEnclave,
        model: Model,
        (name, batch): (Option<&str>, usize),
    ) -> Result<Self, SessionError> {
        if batch == 0 {
            return Err(SessionError::Config(
                "the serving batch must be at least 1".into(),
            ));
        }
        let name = name.unwrap_or(model.arch_name()).to_string();
        if !valid_name(&name) {
            return Err(SessionError::Config(format!(
                "model name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        // Queries carry images of the model's input shape, normalised with the statistics its
        // training data had (sealed in format-4+ checkpoints); without any, CIFAR-10's for
        // colour images and MNIST's for grey ones, the sets the built-in models are made for.
        let shape = model.input_shape();
        let mut spec = crate::nn::input::InputSpec {
            shape,
            ..if shape[0] == 1 {
                crate::nn::input::InputSpec::mnist()
            } else {
                crate::nn::input::InputSpec::cifar10()
            }
        };
        if let Some((m, s)) = model.input_norm() {
            (spec.mean, spec.std) = (m.to_vec(), s.to_vec());
        }
        spec.check()
            .map_err(|e| SessionError::Config(format!("the model's input statistics: {e}")))?;
        Ok(ServeSession {
            enclave,
            classes: model.outputs(),
            model,
            name: name.to_string(),
            batch,
            counter: 0,
            seen: HashSet::new(),
            spec,
        })
    }

    /// The served model's public description.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            kind: match self.model.file_spec() {
                Some(_) => "model-file",
                None => crate::nn::ModelKind::parse(self.model.arch_name())
                    .map_or("model-file", crate::nn::ModelKind::name),
            },
            input: self.spec.shape,
            classes: self.classes,
        }
    }

    /// The name queries are sealed for (their associated data).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The attested service key queries are sealed to.
    pub fn service_public_key(&self) -> [u8; 32] {
        self.enclave.service_public_key()
    }

    /// The report data this enclave's evidence binds for a client's nonce.
    pub fn service_report_data(&self, nonce: &[u8; 32]) -> [u8; 32] {
        self.enclave.service_report_data(nonce)
    }

    /// Ecall "state tag": a MAC (pair key) of the served model and its name, for the peer: equal
    /// tags mean E0 and E1 serve the same model.
    pub fn state_tag(&self) -> StateTag {
        let mut mac = self.enclave.seeds().state_mac_key().hmac_sha256();
        mac.update(b"goten/serve-tag/v1\0");
        mac.update(self.name.as_bytes());
        mac.update(&[0]);
        self.model.feed_state(&mut |b| mac.update(b));
        StateTag(mac.finalize().into_bytes().into())
    }

    /// Ecall "check the peer's tag": fails unless the peer serves the same model.
    pub fn check_peer_tag(&self, peer: &StateTag) -> Result<(), SessionError> {
        if super::macs_equal(&self.state_tag().0, &peer.0) {
            Ok(())
        } else {
            let other = if self.enclave.role() == Role::S0 {
                Role::S1
            } else {
                Role::S0
            };
            Err(SessionError::Reported {
                fault: super::Fault::Storage,
                message: format!(
                    "{other}'s enclave serves a different model: the two hosts loaded checkpoints of different runs or steps"
                ),
            })
        }
    }

    /// Ecall "infer": answers a batch of sealed queries, one reply per query in order (E0's
    /// replies hold the sealed answers; E1's are empty for the queries it accepted). Queries
    /// that do not open, are malformed or replayed are refused without stopping the others;
    /// an error of the protocol itself (a peer or S2 gone, tampering) fails the whole call.
    /// E0 and E1 must receive the same batch (their hosts relay it), so their PRG counters and
    /// replay sets stay equal.
    pub fn infer(
        &mut self,
        host: &mut dyn HostServices,
        sealed: &[Vec<u8>],
    ) -> Result<Vec<Reply>, SessionError> {
        let input = self.info().input;
        let mut replies: Vec<Reply> = Vec::with_capacity(sealed.len());
        let mut opened = Vec::new();
        let mut fresh = HashSet::new();
        for (i, q) in sealed.iter().enumerate() {
            let r = query::open_query(
                self.enclave.service_key(),
                &self.name,
                input,
                MAX_IMAGES_PER_QUERY,
                q,
            )
            .and_then(|o| {
                let id = query::query_id(q).expect("an opened query has its key");
                if self.seen.contains(&id) || !fresh.insert(id) {
                    return Err(QueryError::Replayed);
                }
                if self.seen.len() + fresh.len() > MAX_REMEMBERED {
                    return Err(QueryError::Malformed(
                        "this serving session has answered its maximum number of queries; the operator must restart it".into(),
                    ));
                }
                Ok((id, o))
            });
            match r {
                Ok((id, o)) => {
                    opened.push((i, id, o));
                    replies.push(Ok(Vec::new()));
                }
                Err(e) => replies.push(Err(e)),
            }
        }
        self.seen.extend(fresh);
        let images: Vec<&[u8]> = opened
            .iter()
            .flat_map(|(_, _, o)| (0..o.count()).map(move |j| o.image(j)))
            .collect();
        let logits = self.forward(host, &images)?;
        // Only S0's host returns answers: E1 computes the same logits (its shares are needed)
        // but seals nothing.
        if self.enclave.role() != Role::S0 {
            return Ok(replies);
        }
        let mut at = 0;
        for (i, id, o) in &opened {
            let rows = &logits[at * self.classes..(at + o.count()) * self.classes];
            at += o.count();
            replies[*i] = query::seal_answer(&o.answer_key, id, self.classes, rows);
        }
        Ok(replies)
    }

    /// Logits of `images`, in evaluation mode, through the protocol, `batch` at a time.
    fn forward(
        &mut self,
        host: &mut dyn HostServices,
        images: &[&[u8]],
    ) -> Result<Vec<f32>, SessionError> {
        let mut out = Vec::with_capacity(images.len() * self.classes);
        for chunk in images.chunks(self.batch) {
            let mut be = ProtocolBackend::new(self.enclave, host, self.counter);
            crate::nn::LinearBackend::next_step(&mut be);
            let x = crate::nn::input::batch(&self.spec, chunk, None);
            let r = self.model.forward(x, false, &mut be);
            self.counter = be.step();
            out.extend_from_slice(r?.expose());
        }
        Ok(out)
    }
}
