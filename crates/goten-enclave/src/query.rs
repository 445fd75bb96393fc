//! Private prediction's messages: a query sealed to the attested service key, and its answer
//! sealed under a key exported from that query's HPKE context.
//!
//! Where it sits: between a client (`goten query`, or any HPKE implementation) and the serving
//! session inside E0 and E1 ([`crate::session::serve`]). The hosts relay these bytes (inside an
//! Open Inference Protocol `BYTES` tensor) and can read neither. Both layouts are fixed here so
//! that a client in another language can be written from this comment and RFC 9180:
//!
//! ```text
//! query  = HPKE-Base seal(service public key, info = "goten/query/v2", aad = model name,
//!                         plaintext)                      (enc 32 bytes || ciphertext)
//! plaintext = "GQRY" || version u8 = 2 || count u32
//!             || channels u16 || height u16 || width u16 || count * C*H*W pixel bytes
//!             (8-bit, channel-major: the CIFAR-10 record layout without its label byte)
//! answer key = Export(the query's HPKE context, "goten/answer/v2", 32)   (RFC 9180 5.3)
//! answer = nonce (12 random bytes) || AES-256-GCM(answer key, nonce,
//!                         aad = "goten/answer/v2" || the query's enc (32 bytes), plaintext)
//! plaintext = "GANS" || version u8 = 2 || count u32 || classes u32 || count * classes logits
//!             (f32, little-endian, image-major)
//! ```
//!
//! Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. Integers are little-endian.
//! Only the client that sealed the query and the enclave that opened it can compute the answer
//! key (as RFC 9458 keys its responses), so the answer needs no second key encapsulation: a
//! query costs the client two X25519 operations and the enclave one. The associated data binds
//! the answer to its query, so a host cannot hand one user's answer to another's request. The
//! enclave remembers every query's encapsulated key (fresh per seal) and refuses a second query
//! with the same one: a replayed query gets no answer.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::hpke::{self, ENC_BYTES, HpkeError, KeyPair};

/// HPKE `info` of a query.
pub const QUERY_INFO: &[u8] = b"goten/query/v2";
/// The answer key's export context, and the prefix of the answer's associated data.
pub const ANSWER_INFO: &[u8] = b"goten/answer/v2";
const QUERY_MAGIC: &[u8; 4] = b"GQRY";
const ANSWER_MAGIC: &[u8; 4] = b"GANS";
const VERSION: u8 = 2;
const QUERY_HEADER: usize = 4 + 1 + 4 + 6;

/// The key one query's answer is sealed under, exported from the query's HPKE context: known
/// to the client that sealed the query and the enclave that opened it. Wiped on drop; never
/// shown.
pub struct AnswerKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for AnswerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerKey(<redacted>)")
    }
}

/// Why a query or an answer cannot be used. Every message is safe to show a host: none
/// carries plaintext.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// The HPKE layer refused it (another key, another model, or altered bytes).
    #[error("the query does not decrypt: {0}")]
    Open(HpkeError),
    /// It decrypted but its plaintext is malformed.
    #[error("malformed query: {0}")]
    Malformed(String),
    /// Its images do not fit the served model.
    #[error("wrong input shape: {0}")]
    Shape(String),
    /// The same sealed query arrived before.
    #[error("replayed query: this sealed query was answered before")]
    Replayed,
    /// Sealing failed (no entropy, or a bad public key).
    #[error("cannot seal: {0}")]
    Seal(HpkeError),
}

/// A query as the enclave opened it.
pub struct Query {
    /// What the answer is sealed under.
    pub answer_key: AnswerKey,
    /// Image shape `[channels, height, width]`.
    pub shape: [usize; 3],
    /// The images, `count * C*H*W` bytes.
    pub pixels: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Query({} images, <redacted>)", self.count())
    }
}

impl Query {
    /// Images in the query.
    pub fn count(&self) -> usize {
        let per: usize = self.shape.iter().product();
        self.pixels.len().checked_div(per).unwrap_or(0)
    }

    /// Image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per: usize = self.shape.iter().product();
        &self.pixels[i * per..(i + 1) * per]
    }
}

/// The client's side: seals `images` (each `C*H*W` bytes of `shape`) for the model `model`;
/// returns the query and the key its answer will be sealed under.
pub fn seal_query(
    service: &[u8; 32],
    model: &str,
    shape: [usize; 3],
    images: &[&[u8]],
) -> Result<(Vec<u8>, AnswerKey), QueryError> {
    let per: usize = shape.iter().product();
    let mut p = Zeroizing::new(Vec::with_capacity(QUERY_HEADER + per * images.len()));
    p.extend_from_slice(QUERY_MAGIC);
    p.push(VERSION);
    p.extend_from_slice(&(images.len() as u32).to_le_bytes());
    for d in shape {
        let d = u16::try_from(d).map_err(|_| QueryError::Shape(format!("dimension {d}")))?;
        p.extend_from_slice(&d.to_le_bytes());
    }
    for img in images {
        if img.len() != per {
            return Err(QueryError::Shape(format!(
                "an image of {} bytes for shape {shape:?}",
                img.len()
            )));
        }
        p.extend_from_slice(img);
    }
    let (q, key) = hpke::seal_exporting(service, QUERY_INFO, model.as_bytes(), &p, ANSWER_INFO)
        .map_err(QueryError::Seal)?;
    Ok((q, AnswerKey(key)))
}

/// The enclave's side: opens a query for `model` with the service key and checks its layout
/// against the model's input shape (at most `max_images` images).
pub fn open_query(
    service: &KeyPair,
    model: &str,
    input: [usize; 3],
    max_images: usize,
    sealed: &[u8],
) -> Result<Query, QueryError> {
    let (p, key) = service
        .open_exporting(QUERY_INFO, model.as_bytes(), sealed, ANSWER_INFO)
        .map_err(QueryError::Open)?;
    if p.len() < QUERY_HEADER || &p[..4] != QUERY_MAGIC {
        return Err(QueryError::Malformed("not a goten query".into()));
    }
    if p[4] != VERSION {
        return Err(QueryError::Malformed(format!(
            "query format version {}, this server reads {VERSION}",
            p[4]
        )));
    }
    let count = u32::from_le_bytes(p[5..9].try_into().expect("4 bytes")) as usize;
    let dim = |i: usize| usize::from(u16::from_le_bytes([p[9 + 2 * i], p[10 + 2 * i]]));
    let shape = [dim(0), dim(1), dim(2)];
    if shape != input {
        return Err(QueryError::Shape(format!(
            "images of shape {shape:?}, the model takes {input:?}"
        )));
    }
    if count == 0 || count > max_images {
        return Err(QueryError::Shape(format!(
            "{count} images in one query; between 1 and {max_images} are accepted"
        )));
    }
    let per: usize = shape.iter().product();
    if p.len() - QUERY_HEADER != count * per {
        return Err(QueryError::Malformed(format!(
            "{} pixel bytes for {count} images of {per}",
            p.len() - QUERY_HEADER
        )));
    }
    Ok(Query {
        answer_key: AnswerKey(key),
        shape,
        pixels: Zeroizing::new(p[QUERY_HEADER..].to_vec()),
    })
}

/// The encapsulated key that identifies a sealed query (for replay detection and the answer's
/// associated data).
pub fn query_id(sealed: &[u8]) -> Option<[u8; 32]> {
    sealed.get(..ENC_BYTES)?.try_into().ok()
}

fn answer_aad(query: &[u8; 32]) -> Vec<u8> {
    [ANSWER_INFO, query.as_slice()].concat()
}

/// The enclave's side: seals the logits of a query's images under its answer key.
pub fn seal_answer(
    key: &AnswerKey,
    query: &[u8; 32],
    classes: usize,
    logits: &[f32],
) -> Result<Vec<u8>, QueryError> {
    let count = logits.len().checked_div(classes).unwrap_or(0);
    let mut p = Zeroizing::new(Vec::with_capacity(13 + 4 * logits.len()));
    p.extend_from_slice(ANSWER_MAGIC);
    p.push(VERSION);
    p.extend_from_slice(&(count as u32).to_le_bytes());
    p.extend_from_slice(&(classes as u32).to_le_bytes());
    for v in logits {
        p.extend_from_slice(&v.to_le_bytes());
    }
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| QueryError::Seal(HpkeError::Seal(e.to_string())))?;
    let ct = Aes256Gcm::new(&(*key.0).into())
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &p,
                aad: &answer_aad(query),
            },
        )
        .map_err(|_| QueryError::Seal(HpkeError::Seal("AES-GCM".into())))?;
    Ok([nonce.as_slice(), &ct].concat())
}

/// An opened answer: `count` rows of `classes` logits.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// Classes per image.
    pub classes: usize,
    /// Logits, image-major.
    pub logits: Vec<f32>,
}

impl Answer {
    /// The logits of image `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.classes..(i + 1) * self.classes]
    }

    /// Images answered.
    pub fn count(&self) -> usize {
        self.logits.len().checked_div(self.classes).unwrap_or(0)
    }
}

/// The client's side: opens the answer to the query `query` (its sealed bytes) with the key
/// [`seal_query`] returned for it.
pub fn open_answer(key: &AnswerKey, query: &[u8], sealed: &[u8]) -> Result<Answer, QueryError> {
    let id = query_id(query).ok_or(QueryError::Malformed("the query is truncated".into()))?;
    if sealed.len() < 12 + 16 {
        return Err(QueryError::Open(HpkeError::Truncated(sealed.len())));
    }
    let nonce: [u8; 12] = sealed[..12].try_into().expect("12 bytes");
    let p = Zeroizing::new(
        Aes256Gcm::new(&(*key.0).into())
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[12..],
                    aad: &answer_aad(&id),
                },
            )
            .map_err(|_| QueryError::Open(HpkeError::Open))?,
    );
    if p.len() < 13 || &p[..4] != ANSWER_MAGIC || p[4] != VERSION {
        return Err(QueryError::Malformed("not a goten answer".into()));
    }
    let count = u32::from_le_bytes(p[5..9].try_into().expect("4 bytes")) as usize;
    let classes = u32::from_le_bytes(p[9..13].try_into().expect("4 bytes")) as usize;
    if classes == 0 || p.len() - 13 != 4 * count * classes {
        return Err(QueryError::Malformed(format!(
            "{} logit bytes for {count} images of {classes} classes",
            p.len() - 13
        )));
    }
    let logits = p[13..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok(Answer { classes, logits })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| (0..12).map(|j| (i * 12 + j) as u8).collect())
            .collect()
    }

    #[test]
    fn query_and_answer_round_trip() {
        let service = KeyPair::derive(&[1; 32]);
        let imgs = images(3);
        let refs: Vec<&[u8]> = imgs.iter().map(|v| &v[..]).collect();
        let (q, key) = seal_query(&service.public_key(), "small", [3, 2, 2], &refs).unwrap();
        let opened = open_query(&service, "small", [3, 2, 2], 8, &q).unwrap();
        assert_eq!(opened.count(), 3);
        assert_eq!(opened.image(2), &imgs[2][..]);
        assert_eq!(
            *opened.answer_key.0, *key.0,
            "both sides derive one answer key"
        );
        assert!(!format!("{opened:?} {key:?}").contains("12"));
        let logits: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let id = query_id(&q).unwrap();
        let a = seal_answer(&opened.answer_key, &id, 2, &logits).unwrap();
        let ans = open_answer(&key, &q, &a).unwrap();
        assert_eq!(ans.count(), 3);
        assert_eq!(ans.row(1), &[1.0, 1.5]);
        // The answer is bound to its query: another query (and its key) does not open it,
        // nor does this key with another query's id, nor a flipped byte.
        let (q2, key2) = seal_query(&service.public_key(), "small", [3, 2, 2], &refs).unwrap();
        assert!(matches!(
            open_answer(&key2, &q2, &a),
            Err(QueryError::Open(_))
        ));
        assert!(matches!(
            open_answer(&key, &q2, &a),
            Err(QueryError::Open(_))
        ));
        let mut t = a.clone();
        t[20] ^= 1;
        assert!(matches!(
            open_answer(&key, &q, &t),
            Err(QueryError::Open(_))
        ));
        assert!(open_answer(&key, &q, &a[..20]).is_err());
        // No logit's bytes appear in the answer.
        assert!(!a.windows(4).any(|w| w == 1.5f32.to_le_bytes()));
    }

    #[test]
    fn every_bad_query_is_refused_with_its_reason() {
        let service = KeyPair::derive(&[1; 32]);
        let imgs = images(2);
        let refs: Vec<&[u8]> = imgs.iter().map(|v| &v[..]).collect();
        let pk = service.public_key();
        let (q, _) = seal_query(&pk, "small", [3, 2, 2], &refs).unwrap();
        // Another model's name, another key, a flipped byte, a truncation.
        assert!(matches!(
            open_query(&service, "vgg11", [3, 2, 2], 8, &q),
            Err(QueryError::Open(_))
        ));
        assert!(matches!(
            open_query(&KeyPair::derive(&[2; 32]), "small", [3, 2, 2], 8, &q),
            Err(QueryError::Open(_))
        ));
        let mut t = q.clone();
        t[40] ^= 1;
        assert!(open_query(&service, "small", [3, 2, 2], 8, &t).is_err());
        assert!(open_query(&service, "small", [3, 2, 2], 8, &q[..20]).is_err());
        // Wrong shape, too many images, an image of the wrong size.
        assert!(matches!(
            open_query(&service, "small", [3, 32, 32], 8, &q),
            Err(QueryError::Shape(_))
        ));
        assert!(matches!(
            open_query(&service, "small", [3, 2, 2], 1, &q),
            Err(QueryError::Shape(_))
        ));
        assert!(seal_query(&pk, "small", [3, 2, 3], &refs).is_err());
        // A well-sealed plaintext that is not a query.
        let junk = hpke::seal(&pk, QUERY_INFO, b"small", b"hello there, not a query").unwrap();
        assert!(matches!(
            open_query(&service, "small", [3, 2, 2], 8, &junk),
            Err(QueryError::Malformed(_))
        ));
    }
}
