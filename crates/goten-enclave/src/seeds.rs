//! The seed book: which secret expands which random tensor of a bilinear op.
//!
//! PROTOCOL.md section 4 fixes who may hold which key: the *pair* key (E0 and E1 only) expands
//! the shares A0, B0, the output pads CM0, CM1 and the rounding noise; the *dealer* key
//! (E0, E1 and S2) expands the Beaver masks U, V and the pad CMZ. Keeping the two keys in
//! separate types makes it impossible to hand S2 a stream it must not have.

use goten_field::{Prg, SecretKey};

/// Random tensors derived from the key E0 and E1 share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PairPurpose {
    /// A0, S0's share of the first operand.
    ShareA0,
    /// B0, S0's share of the second operand.
    ShareB0,
    /// CM0, S0's output pad.
    PadC0,
    /// CM1, S1's output pad.
    PadC1,
    /// Noise for stochastic rounding of the quantizer (never derived from a mask stream).
    RoundingNoise,
    /// The secret challenge of the integrity check (hosts must not know it).
    Check,
}

/// Random tensors derived from the key E0, E1 and S2 share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DealerPurpose {
    /// U, the Beaver mask of the first operand.
    MaskU,
    /// V, the Beaver mask of the second operand.
    MaskV,
    /// CMZ, S2's output pad.
    PadZ,
}

impl PairPurpose {
    fn label(self) -> &'static str {
        match self {
            PairPurpose::ShareA0 => "pair/A0",
            PairPurpose::ShareB0 => "pair/B0",
            PairPurpose::PadC0 => "pair/CM0",
            PairPurpose::PadC1 => "pair/CM1",
            PairPurpose::RoundingNoise => "pair/round",
            PairPurpose::Check => "pair/check",
        }
    }
}

impl DealerPurpose {
    fn label(self) -> &'static str {
        match self {
            DealerPurpose::MaskU => "dealer/U",
            DealerPurpose::MaskV => "dealer/V",
            DealerPurpose::PadZ => "dealer/CMZ",
        }
    }
}

/// The stream of a dealer tensor from the dealer key alone: what S2's host derives (it holds
/// the dealer key and nothing else).
pub fn dealer_stream(dealer_key: &SecretKey, purpose: DealerPurpose, op_id: u64) -> Prg {
    Prg::new(dealer_key, purpose.label(), op_id)
}

/// The two session keys of an enclave and the PRGs they expand. Debug output is redacted.
#[derive(Debug)]
pub struct SeedBook {
    pair: SecretKey,
    dealer: SecretKey,
    /// Keys the rounding noise: derived from the pair key at the start of a job and kept in
    /// sealed checkpoints, so a resumed job (with fresh session keys) rounds exactly as before.
    job: SecretKey,
}

impl SeedBook {
    /// A seed book from the session's pair key (E0/E1) and dealer key (E0/E1/S2).
    pub fn new(pair: SecretKey, dealer: SecretKey) -> Self {
        let job = pair.derive(b"goten/job-secret");
        SeedBook { pair, dealer, job }
    }

    /// The job secret (for sealing into checkpoints inside the enclave).
    pub(crate) fn job_secret(&self) -> &SecretKey {
        &self.job
    }

    /// The key of the state tags E0 and E1 compare (from the pair key: S2 and hosts lack it).
    pub(crate) fn state_mac_key(&self) -> SecretKey {
        self.pair.derive(b"goten/state-mac")
    }

    /// Input keying material of the enclaves' service key (section "service"): from the pair
    /// key, so E0 and E1 derive the same key pair and nobody else can.
    pub(crate) fn service_ikm(&self) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = self.pair.derive(b"goten/service-key").hmac_sha256();
        mac.update(b"goten/service-key/ikm");
        mac.finalize().into_bytes().into()
    }

    /// Restores the job secret of a resumed job.
    pub(crate) fn set_job_secret(&mut self, job: SecretKey) {
        self.job = job;
    }

    /// The stream of a pair-only tensor of op `op_id`.
    pub fn pair(&self, purpose: PairPurpose, op_id: u64) -> Prg {
        let key = if purpose == PairPurpose::RoundingNoise {
            &self.job
        } else {
            &self.pair
        };
        Prg::new(key, purpose.label(), op_id)
    }

    /// The stream of a dealer tensor of op `op_id` (S2 derives the same from its copy).
    pub fn dealer(&self, purpose: DealerPurpose, op_id: u64) -> Prg {
        dealer_stream(&self.dealer, purpose, op_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_keys_give_distinct_streams() {
        let book = SeedBook::new(
            SecretKey::from_bytes([1; 32]),
            SecretKey::from_bytes([1; 32]),
        );
        let mut seen = std::collections::HashSet::new();
        let pairs = [
            PairPurpose::ShareA0,
            PairPurpose::ShareB0,
            PairPurpose::PadC0,
            PairPurpose::PadC1,
            PairPurpose::RoundingNoise,
            PairPurpose::Check,
        ];
        for op in 0..3 {
            for p in pairs {
                let mut w = [0u32; 4];
                book.pair(p, op).fill_u32(0, 0, &mut w);
                assert!(seen.insert(w), "{p:?} op {op} repeats a stream");
            }
            for d in [
                DealerPurpose::MaskU,
                DealerPurpose::MaskV,
                DealerPurpose::PadZ,
            ] {
                let mut w = [0u32; 4];
                book.dealer(d, op).fill_u32(0, 0, &mut w);
                assert!(seen.insert(w), "{d:?} op {op} repeats a stream");
            }
        }
        assert!(!format!("{book:?}").contains("1, 1"));
    }
}
