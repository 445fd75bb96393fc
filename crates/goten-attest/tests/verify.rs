//! Offline verification of the real sample evidence shipped with dcap-qvl and sev (copied into
//! tests/fixtures with their licences), and every way it must fail: a flipped byte, expired
//! collateral, a wrong pinned measurement, wrong report data, an unaccepted TCB status.

use goten_attest::policy::Policy;
use goten_attest::{
    AttestationError, Measurements, TeeKind, Verified, parse_time, read_evidence, verify_evidence,
};

const SGX_QUOTE: &[u8] = include_bytes!("fixtures/sgx_quote");
const SGX_COLLATERAL: &[u8] = include_bytes!("fixtures/sgx_quote_collateral.json");
const TDX_QUOTE: &[u8] = include_bytes!("fixtures/tdx_quote");
const TDX_COLLATERAL: &[u8] = include_bytes!("fixtures/tdx_quote_collateral.json");
const SNP_REPORT_HEX: &[u8] = include_bytes!("fixtures/report_milan.hex");
const SNP_VCEK: &[u8] = include_bytes!("fixtures/vcek_milan.der");

const TDX_MRTD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
const SGX_MRENCLAVE: &str = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
const SNP_MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";

/// Inside every sample's collateral window.
fn at() -> u64 {
    parse_time("2025-06-20T00:00:00Z").unwrap()
}

/// Long after every sample's collateral expired.
fn late() -> u64 {
    parse_time("2040-01-01T00:00:00Z").unwrap()
}

fn snp_report() -> Vec<u8> {
    read_evidence(SNP_REPORT_HEX)
}

fn verify(
    kind: TeeKind,
    evidence: &[u8],
    collateral: &[u8],
    at: u64,
) -> Result<Verified, AttestationError> {
    verify_evidence(kind, evidence, collateral, at)
}

#[test]
fn genuine_samples_verify_with_their_status_and_measurements() {
    let t = verify(TeeKind::Tdx, TDX_QUOTE, TDX_COLLATERAL, at()).unwrap();
    assert_eq!(t.tcb_status, "UpToDate");
    assert_eq!(t.measurement_hex(), TDX_MRTD);
    assert!(!t.debug);

    let s = verify(TeeKind::Sgx, SGX_QUOTE, SGX_COLLATERAL, at()).unwrap();
    assert_eq!(s.tcb_status, "ConfigurationAndSWHardeningNeeded");
    assert_eq!(s.advisories, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(s.measurement_hex(), SGX_MRENCLAVE);
    assert!(s.report_data.starts_with(b"Hello, world!"));

    let n = verify(TeeKind::SevSnp, &snp_report(), SNP_VCEK, at()).unwrap();
    assert_eq!(n.measurement_hex(), SNP_MEASUREMENT);
    let Measurements::SevSnp {
        policy,
        reported_tcb,
        ..
    } = n.measurements
    else {
        panic!("not SNP")
    };
    assert_eq!(policy, 0x30000);
    assert_eq!(reported_tcb, [3, 0, 8, 115]);
    // The hex text file and the raw bytes are the same evidence.
    assert_eq!(
        verify(TeeKind::SevSnp, SNP_REPORT_HEX, SNP_VCEK, at()).unwrap(),
        n
    );
    let json = n.to_json();
    assert_eq!(json["kind"], "sev-snp");
    assert_eq!(json["measurement"], SNP_MEASUREMENT);
}

#[test]
fn a_flipped_byte_anywhere_signed_is_refused() {
    // Report body bytes (measurements, report data) and the signature region.
    for at_byte in [60usize, 200, 560, 700] {
        let mut q = TDX_QUOTE.to_vec();
        q[at_byte] ^= 0x01;
        let e = verify(TeeKind::Tdx, &q, TDX_COLLATERAL, at()).unwrap_err();
        assert!(
            matches!(
                e,
                AttestationError::Invalid(_) | AttestationError::Malformed(_)
            ),
            "byte {at_byte}: {e}"
        );
    }
    let mut q = SGX_QUOTE.to_vec();
    q[120] ^= 0x80; // inside MRENCLAVE
    assert!(matches!(
        verify(TeeKind::Sgx, &q, SGX_COLLATERAL, at()),
        Err(AttestationError::Invalid(_))
    ));
    for at_byte in [0x50usize, 0x90, 0x2a0] {
        let mut r = snp_report();
        r[at_byte] ^= 0x01;
        let e = verify(TeeKind::SevSnp, &r, SNP_VCEK, at()).unwrap_err();
        assert!(
            matches!(
                e,
                AttestationError::Invalid(_) | AttestationError::Malformed(_)
            ),
            "byte {at_byte}: {e}"
        );
    }
}

#[test]
fn expired_collateral_is_refused() {
    for (kind, ev, col) in [
        (TeeKind::Tdx, TDX_QUOTE.to_vec(), TDX_COLLATERAL),
        (TeeKind::Sgx, SGX_QUOTE.to_vec(), SGX_COLLATERAL),
        (TeeKind::SevSnp, snp_report(), SNP_VCEK),
    ] {
        let e = verify(kind, &ev, col, late()).unwrap_err();
        assert!(matches!(e, AttestationError::Invalid(_)), "{kind}: {e}");
    }
    let e = verify(TeeKind::SevSnp, &snp_report(), SNP_VCEK, late()).unwrap_err();
    assert!(e.to_string().contains("expired or not yet valid"), "{e}");
}

#[test]
fn truncated_wrong_kind_and_bad_collateral_are_named() {
    let e = verify(TeeKind::Tdx, &TDX_QUOTE[..100], TDX_COLLATERAL, at()).unwrap_err();
    assert!(matches!(e, AttestationError::Malformed(_)), "{e}");
    let e = verify(TeeKind::Sgx, TDX_QUOTE, TDX_COLLATERAL, at()).unwrap_err();
    assert_eq!(e.to_string(), "expected sgx evidence, got tdx");
    let e = verify(TeeKind::Tdx, TDX_QUOTE, b"{\"not\": 1}", at()).unwrap_err();
    assert!(matches!(e, AttestationError::Collateral(_)), "{e}");
    // Another sample's collateral: its TCB info does not match this platform.
    assert!(verify(TeeKind::Tdx, TDX_QUOTE, SGX_COLLATERAL, at()).is_err());
    let e = verify(TeeKind::SevSnp, &snp_report()[..1000], SNP_VCEK, at()).unwrap_err();
    assert!(e.to_string().contains("1184 bytes"), "{e}");
    let e = verify(TeeKind::SevSnp, &snp_report(), b"junk", at()).unwrap_err();
    assert!(matches!(e, AttestationError::Collateral(_)), "{e}");
    let mut vcek = SNP_VCEK.to_vec();
    vcek[40] ^= 0xff;
    assert!(verify(TeeKind::SevSnp, &snp_report(), &vcek, at()).is_err());
}

fn rd(v: &Verified) -> [u8; 64] {
    v.report_data
}

#[test]
fn policy_pins_measurements_and_report_data() {
    let t = verify(TeeKind::Tdx, TDX_QUOTE, TDX_COLLATERAL, at()).unwrap();
    let mut p = Policy {
        mr_td: Some(TDX_MRTD.into()),
        ..Policy::default()
    };
    p.check(&t, &rd(&t)).unwrap();
    let mut other = rd(&t);
    other[63] ^= 1;
    assert_eq!(p.check(&t, &other), Err(AttestationError::ReportData));
    p.rtmr = vec![String::new(), String::new(), "00".repeat(48)];
    let e = p.check(&t, &rd(&t)).unwrap_err();
    assert!(e.to_string().starts_with("RTMR2 is d833feef"), "{e}");
    p.rtmr.clear();
    p.mr_td = Some("11".repeat(48));
    assert!(matches!(
        p.check(&t, &rd(&t)),
        Err(AttestationError::WrongMeasurement { .. })
    ));

    let n = verify(TeeKind::SevSnp, &snp_report(), SNP_VCEK, at()).unwrap();
    let mut p = Policy {
        measurement: Some(SNP_MEASUREMENT.into()),
        guest_policy: Some(0x30000),
        min_tcb: Some([3, 0, 8, 115]),
        ..Policy::default()
    };
    p.check(&n, &rd(&n)).unwrap();
    p.min_tcb = Some([3, 0, 9, 0]);
    assert!(
        p.check(&n, &rd(&n))
            .unwrap_err()
            .to_string()
            .contains("reported TCB")
    );
    p.min_tcb = None;
    p.measurement = Some("00".repeat(48));
    assert!(matches!(
        p.check(&n, &rd(&n)),
        Err(AttestationError::WrongMeasurement { .. })
    ));
}

#[test]
fn tcb_status_and_advisories_follow_the_policy() {
    let s = verify(TeeKind::Sgx, SGX_QUOTE, SGX_COLLATERAL, at()).unwrap();
    let mut p = Policy {
        mr_enclave: Some(SGX_MRENCLAVE.into()),
        ..Policy::default()
    };
    // UpToDate only (the default) refuses this platform.
    let e = p.check(&s, &rd(&s)).unwrap_err();
    assert!(matches!(e, AttestationError::TcbNotAccepted { .. }), "{e}");
    // Accepting the status is not enough: each advisory must be named.
    p.accept_tcb
        .push("ConfigurationAndSWHardeningNeeded".into());
    p.allow_advisories = vec!["INTEL-SA-00289".into()];
    assert!(
        p.check(&s, &rd(&s))
            .unwrap_err()
            .to_string()
            .contains("INTEL-SA-00615")
    );
    p.allow_advisories.push("INTEL-SA-00615".into());
    p.check(&s, &rd(&s)).unwrap();
    // MRSIGNER + product id + minimum SVN instead of MRENCLAVE.
    let Measurements::Sgx { mr_signer, .. } = &s.measurements else {
        panic!()
    };
    let signer: String = mr_signer.iter().map(|b| format!("{b:02x}")).collect();
    p.mr_enclave = None;
    p.mr_signer = Some(signer);
    p.isv_prod_id = Some(0);
    p.min_isv_svn = Some(0);
    p.check(&s, &rd(&s)).unwrap();
    p.min_isv_svn = Some(1);
    assert!(
        p.check(&s, &rd(&s))
            .unwrap_err()
            .to_string()
            .contains("ISVSVN")
    );
}

#[test]
fn a_policy_must_pin_an_identity() {
    assert!(
        Policy::default()
            .validate(TeeKind::Tdx)
            .unwrap_err()
            .contains("mr_td")
    );
    assert!(
        Policy::default()
            .validate(TeeKind::Sgx)
            .unwrap_err()
            .contains("mr_enclave")
    );
    assert!(
        Policy::default()
            .validate(TeeKind::SevSnp)
            .unwrap_err()
            .contains("measurement")
    );
    let p = Policy {
        mr_td: Some("abc".into()),
        ..Policy::default()
    };
    assert!(p.validate(TeeKind::Tdx).unwrap_err().contains("48 bytes"));
}

#[test]
fn the_key_exchange_verifier_checks_quote_policy_and_binding() {
    use goten_attest::verifier::HardwareVerifier;
    use goten_enclave::attest::{AttestError, Evidence, EvidenceVerifier};
    let pinned = Policy {
        mr_td: Some(TDX_MRTD.into()),
        ..Policy::default()
    };
    let v = HardwareVerifier::new(
        TeeKind::Tdx,
        pinned.clone(),
        vec![SGX_COLLATERAL.to_vec(), TDX_COLLATERAL.to_vec()],
        at(),
    )
    .unwrap();
    // The sample quote is genuine and passes the policy with either collateral listed; it was
    // made for another protocol, so it binds no goten hello: refused on the binding alone.
    let e = v.check(TDX_QUOTE, &[0; 32]).unwrap_err();
    assert_eq!(e, AttestationError::ReportData);
    let hello = Evidence::Hardware {
        tee: TeeKind::Tdx.tag(),
        quote: TDX_QUOTE.to_vec(),
    };
    assert!(
        matches!(v.verify(&hello, &[0; 32]), Err(AttestError::Hardware(m)) if m.contains("report data"))
    );
    // Another pinned MRTD: refused on the measurement before the binding.
    let other = HardwareVerifier::new(
        TeeKind::Tdx,
        Policy {
            mr_td: Some("00".repeat(48)),
            ..Policy::default()
        },
        vec![TDX_COLLATERAL.to_vec()],
        at(),
    )
    .unwrap();
    assert!(matches!(
        other.check(TDX_QUOTE, &[0; 32]),
        Err(AttestationError::WrongMeasurement { .. })
    ));
    // Expired collateral, the wrong kind, simulated evidence: refused.
    let late_v = HardwareVerifier::new(
        TeeKind::Tdx,
        pinned.clone(),
        vec![TDX_COLLATERAL.to_vec()],
        late(),
    )
    .unwrap();
    assert!(matches!(
        late_v.check(TDX_QUOTE, &[0; 32]),
        Err(AttestationError::Invalid(_))
    ));
    let sgx = Evidence::Hardware {
        tee: TeeKind::Sgx.tag(),
        quote: SGX_QUOTE.to_vec(),
    };
    assert!(v.verify(&sgx, &[0; 32]).is_err());
    let sim = Evidence::Simulated {
        measurement: [0; 32],
        report_data: [0; 32],
        signature: [0; 64],
    };
    assert!(matches!(
        v.verify(&sim, &[0; 32]),
        Err(AttestError::WrongKind(_))
    ));
    // A policy that pins nothing, or no collateral, cannot make a verifier.
    assert!(
        HardwareVerifier::new(
            TeeKind::Tdx,
            Policy::default(),
            vec![TDX_COLLATERAL.to_vec()],
            at()
        )
        .is_err()
    );
    assert!(HardwareVerifier::new(TeeKind::Tdx, pinned, vec![], at()).is_err());
}
