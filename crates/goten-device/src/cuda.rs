//! The CUDA backend (feature `cuda`): exact modular GEMMs on an NVIDIA GPU.
//!
//! Where it sits: a [`crate::Device`] beside [`crate::CpuDevice`], chosen with `--device cuda`.
//! It reuses `goten-linalg`'s im2col / col2im lowering (on the host, as the CPU backend does)
//! and replaces only the GEMM: operands are uploaded once as f64 centered residues, cuBLAS
//! DGEMM multiplies them in reduction chunks of [`Ring::f64_exact_chunk`] terms (every partial
//! sum stays an integer below 2^53, so any summation order cuBLAS picks is exact, DESIGN.md
//! section 2), and a run-time compiled kernel folds each chunk into a wrapping u32 accumulator
//! (exact modulo 2^k because 2^k divides 2^32). The result is bit-identical to the CPU backend,
//! which the shared conformance suite checks where a GPU exists.
//!
//! cudarc loads the CUDA libraries at run time: this module builds everywhere, and
//! [`CudaDevice::new`] reports the device unavailable (never panics) where the driver, NVRTC or
//! cuBLAS is missing.
#![allow(unsafe_code)]

use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use goten_field::{BilinearOp, Ring, RingTensor};
use goten_linalg::gemm::View;
use goten_linalg::{Arith, dispatch};

use crate::{Device, DeviceError, common_ring};

/// Adds each exact chunk product (an integer-valued double below 2^53) into the wrapping u32
/// accumulator: the conversion to a 64-bit integer is exact, and the conversion to unsigned
/// is defined modulo 2^32.
const KERNEL: &str = r#"
extern "C" __global__ void goten_acc_mod(unsigned int* acc, const double* c, unsigned long long n) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        acc[i] += (unsigned int)(long long)c[i];
    }
}
"#;

/// Whether the CUDA driver, NVRTC and cuBLAS libraries can be loaded here.
pub fn libraries_present() -> Result<(), String> {
    // SAFETY: these only try to open the shared libraries (libloading), calling nothing in them.
    let (driver, nvrtc, cublas) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
        )
    };
    if !driver {
        return Err("no CUDA driver (libcuda) on this machine".into());
    }
    if !nvrtc {
        return Err("the CUDA driver is present but NVRTC (libnvrtc) is not".into());
    }
    if !cublas {
        return Err("the CUDA driver is present but cuBLAS (libcublas) is not".into());
    }
    Ok(())
}

struct Gpu {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    acc_mod: CudaFunction,
}

/// One GPU; jobs run one at a time on its stream.
pub struct CudaDevice {
    gpu: Mutex<Gpu>,
    pool: rayon::ThreadPool,
    label: String,
}

fn unavailable(what: &str, e: impl std::fmt::Debug) -> DeviceError {
    DeviceError::Unavailable(format!("CUDA {what}: {e:?}"))
}

impl CudaDevice {
    /// The GPU with index `ordinal`; `threads` host workers lower convolutions (0: one per
    /// core). Fails with [`DeviceError::Unavailable`] where there is no usable GPU.
    pub fn new(ordinal: usize, threads: usize) -> Result<Self, DeviceError> {
        libraries_present().map_err(DeviceError::Unavailable)?;
        let ctx = CudaContext::new(ordinal).map_err(|e| unavailable("context", e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        // Its own stream: the three parties of a single-GPU run overlap their jobs.
        let stream = ctx.new_stream().map_err(|e| unavailable("stream", e))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| unavailable("cuBLAS", e))?;
        let ptx = cudarc::nvrtc::compile_ptx(KERNEL).map_err(|e| unavailable("NVRTC", e))?;
        let module = ctx.load_module(ptx).map_err(|e| unavailable("module", e))?;
        let acc_mod = module
            .load_function("goten_acc_mod")
            .map_err(|e| unavailable("kernel", e))?;
        Ok(CudaDevice {
            gpu: Mutex::new(Gpu {
                stream,
                blas,
                acc_mod,
            }),
            pool: crate::cpu::pool(threads)?,
            label: format!("cuda:{ordinal} ({name})"),
        })
    }
}

/// Copies a strided view into a contiguous row-major `rows x cols` buffer.
fn contiguous(v: View<'_, f64>, rows: usize, cols: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        let base = v.off + i * v.rs;
        out.extend((0..cols).map(|j| v.data[base + j * v.cs]));
    }
    out
}

impl Gpu {
    /// Row-major `lhs (m x k) * rhs (k x n)` modulo 2^32 (then reduced by the caller).
    fn mod_gemm(
        &mut self,
        ring: Ring,
        (m, n, k): (usize, usize, usize),
        lhs: &[f64],
        rhs: &[f64],
    ) -> Result<Vec<u32>, String> {
        let err = |what: &str, e: &dyn std::fmt::Debug| format!("CUDA {what} failed: {e:?}");
        let int = |x: usize| i32::try_from(x).map_err(|_| format!("dimension {x} exceeds cuBLAS"));
        let s = &self.stream;
        let mut acc = s.alloc_zeros::<u32>(m * n).map_err(|e| err("alloc", &e))?;
        if k == 0 || m == 0 || n == 0 {
            return s.clone_dtoh(&acc).map_err(|e| err("copy", &e));
        }
        let a = s.clone_htod(lhs).map_err(|e| err("upload", &e))?;
        let b = s.clone_htod(rhs).map_err(|e| err("upload", &e))?;
        let mut c = s.alloc_zeros::<f64>(m * n).map_err(|e| err("alloc", &e))?;
        let chunk = ring.f64_exact_chunk().max(1);
        let total = m * n;
        let cfg_launch = LaunchConfig::for_num_elems(
            u32::try_from(total).map_err(|_| format!("{total} outputs exceed one launch"))?,
        );
        let mut k0 = 0;
        while k0 < k {
            let kc = chunk.min(k - k0);
            // Column-major view of the row-major problem: C^T (n x m) = B^T (n x kc) A^T (kc x m).
            // Row-major rhs rows k0.. are column-major columns k0.. of B^T (offset k0 * n,
            // leading dimension n); row-major lhs columns k0.. are column-major rows k0.. of A^T
            // (offset k0, leading dimension k).
            let cfg = GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_N,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: int(n)?,
                n: int(m)?,
                k: int(kc)?,
                alpha: 1.0f64,
                lda: int(n)?,
                ldb: int(k)?,
                beta: 0.0f64,
                ldc: int(n)?,
            };
            let bv = b.slice(k0 * n..);
            let av = a.slice(k0..);
            // SAFETY: the views hold at least the elements the configuration reads: B^T needs
            // (kc - 1) * n + n <= (k - k0) * n from offset k0 * n, A^T needs
            // (m - 1) * k + kc <= m * k - k0 from offset k0; C has m * n elements.
            unsafe { self.blas.gemm(cfg, &bv, &av, &mut c) }.map_err(|e| err("DGEMM", &e))?;
            let n64 = total as u64;
            let mut launch = s.launch_builder(&self.acc_mod);
            launch.arg(&mut acc).arg(&c).arg(&n64);
            // SAFETY: the kernel reads `n64` doubles of `c` and writes `n64` u32 of `acc`, both
            // of exactly that length; the arguments match its signature.
            unsafe { launch.launch(cfg_launch) }.map_err(|e| err("kernel launch", &e))?;
            k0 += kc;
        }
        s.clone_dtoh(&acc).map_err(|e| err("download", &e))
    }
}

/// The arithmetic `goten-linalg` runs with: the ring's, with the GEMM on the GPU.
struct CudaArith<'a> {
    ring: Ring,
    gpu: &'a Mutex<Gpu>,
    /// The first GPU failure of this job (the `Arith` interface has no error path).
    failed: Mutex<Option<String>>,
}

impl Arith for CudaArith<'_> {
    type Elem = i32;
    type F = f64;

    fn lift(&self, x: i32) -> f64 {
        f64::from(x)
    }

    fn gemm(
        &self,
        mnk: (usize, usize, usize),
        lhs: View<'_, f64>,
        rhs: View<'_, f64>,
        _threads: usize,
    ) -> Vec<i32> {
        let (m, n, k) = mnk;
        let mut failed = self.failed.lock().expect("error slot");
        if failed.is_some() {
            return vec![0; m * n];
        }
        let (l, r) = (contiguous(lhs, m, k), contiguous(rhs, k, n));
        let mut gpu = self.gpu.lock().expect("gpu lock");
        match gpu.mod_gemm(self.ring, mnk, &l, &r) {
            // Two's complement reinterpretation: `finish` reduces it to a centered residue.
            Ok(v) => v.into_iter().map(|x| x as i32).collect(),
            Err(e) => {
                *failed = Some(e);
                vec![0; m * n]
            }
        }
    }

    fn acc(&self, a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }

    fn finish(&self, a: i32) -> i32 {
        self.ring.reduce_u32(a as u32)
    }
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn bilinear(
        &self,
        op: &BilinearOp,
        a: &RingTensor,
        b: &RingTensor,
    ) -> Result<RingTensor, DeviceError> {
        let ring = common_ring(a, b)?;
        let shape = op.output_shape(a.shape(), b.shape())?;
        let arith = CudaArith {
            ring,
            gpu: &self.gpu,
            failed: Mutex::new(None),
        };
        let data = self
            .pool
            .install(|| dispatch(&arith, op, (a.shape(), a.data()), (b.shape(), b.data())))?;
        if let Some(e) = arith.failed.into_inner().expect("error slot") {
            return Err(DeviceError::Backend(e));
        }
        Ok(RingTensor::from_residues(ring, &shape, data)?)
    }
}
