//! The memory meter on Vulkan (lavapipe in CI) pins the orderings users rely on: a dense model's
//! peak holds its weights; `per-forward` holds one pass's decoded weights at its peak; `none`
//! holds no more than two decoded weights at once, yet more than its compressed bytes (the
//! transient a sample at pass boundaries would miss); and between passes every compressed
//! policy holds its resident compressed bytes plus what its cache keeps.
//!
//! One test, run alone in its binary: the allocator's figures are per device and per process.

use std::sync::Arc;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use ember::policy::{Adaptive, CachePolicy, Full, NoCache, PerForward};
use ember::{Config, FusedMode, Meter, MeterSource, NameMap, Residency, Selection, Store, Target};
use ember_codec::synthetic::{llama_like_f32, to_bf16_bytes};
use ember_codec::{encode_tensor, ContainerWriter, Dtype, EncodeOptions, SchemeKind};

const IN: usize = 256;
const HID: usize = 1024;
const OUT: usize = 256;
const BATCH: usize = 4;

#[derive(Module, Debug)]
struct Mlp {
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Self { up: LinearConfig::new(IN, HID).init(device), down: LinearConfig::new(HID, OUT).init(device) }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.down.forward(relu(self.up.forward(x)))
    }
}

fn container(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("mlp.ember");
    let mut w = ContainerWriter::create(&path).unwrap();
    let shapes = [
        ("up.weight", vec![HID, IN]),
        ("up.bias", vec![HID]),
        ("down.weight", vec![OUT, HID]),
        ("down.bias", vec![OUT]),
    ];
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let (rows, cols) = if shape.len() == 2 { (shape[0], shape[1]) } else { (1, shape[0]) };
        let data = to_bf16_bytes(&llama_like_f32(rows, cols, 40 + i as u64));
        let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let opts = EncodeOptions { tile_elems: 4096, ..EncodeOptions::default() };
        w.add(encode_tensor(name, Dtype::BF16, &dims, &data, SchemeKind::Lossless, &opts).unwrap()).unwrap();
    }
    w.finish().unwrap();
    path
}

fn names() -> NameMap {
    NameMap::new(|p| Some(if p.ends_with("weight") { Target::transposed(p) } else { Target::plain(p) }))
}

/// What one configuration held, in bytes above the device's baseline.
#[derive(Debug)]
struct Held {
    peak: u64,
    idle: u64,
    compressed_on_device: u64,
    cached: u64,
}

fn measure(path: &std::path::Path, device: &Device, config: Config) -> Held {
    let meter = Arc::new(Meter::new(device));
    assert_eq!(meter.source(), MeterSource::DeviceAllocator, "a GPU reports its allocator");
    let x = Tensor::<2>::from_data(TensorData::new(llama_like_f32(BATCH, IN, 7), [BATCH, IN]), device);
    let base = meter.sample().expect("a reading").in_use;
    let store = Store::open(path).unwrap();
    let model = store.attach(Mlp::new(device), config.names(names())).unwrap();
    store.set_meter(Some(Arc::clone(&meter)));
    drop(store.forward(|| model.forward(x.clone())).into_data()); // warm-up
    meter.reset_peaks();
    drop(store.forward(|| model.forward(x.clone())).into_data());
    let peak = meter.peaks().in_use;
    let idle = meter.sample().expect("a reading").in_use;
    let stats = store.stats();
    let held = Held {
        peak: peak.saturating_sub(base),
        idle: idle.saturating_sub(base),
        compressed_on_device: stats.compressed_resident_device_bytes,
        cached: stats.cached_bytes,
    };
    drop(model);
    drop(store);
    held
}

#[test]
fn peaks_and_idle_follow_what_each_policy_keeps() {
    let device = ember_kernels::device::vulkan_device()
        .expect("a Vulkan device (lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)");
    let dir = tempfile::tempdir().unwrap();
    let path = container(dir.path());
    let up = (4 * HID * IN) as u64;
    let down = (4 * OUT * HID) as u64;
    let biases = (4 * (HID + OUT)) as u64;
    let weights = up + down + biases;
    // Activations of one pass: x, the hidden layer before and after relu, the output (f32).
    let activations = (4 * BATCH * (IN + 2 * HID + OUT)) as u64;

    let dense = measure(&path, &device, Config::new(NoCache).select(Selection::all().largest(0)));
    assert!(dense.peak >= weights, "dense peak {dense:?} below its {weights} weight bytes");

    for fused in [FusedMode::Off, FusedMode::Auto] {
        let policy = |p: Box<dyn CachePolicy>| Config::new(p).residency(Residency::Device).fused(fused);
        let none = measure(&path, &device, policy(Box::new(NoCache)));
        let per_forward = measure(&path, &device, policy(Box::new(PerForward)));
        let full = measure(&path, &device, policy(Box::new(Full)));
        let adaptive = measure(&path, &device, policy(Box::new(Adaptive::new(up))));
        let case = |name: &str, h: &Held| format!("{name} {fused:?}: {h:?}");

        // `none`: a decoded weight exists at its peak, at most two at once (plus activations).
        assert!(none.peak > none.compressed_on_device, "{}", case("none", &none));
        assert!(none.peak <= none.compressed_on_device + up + down + biases + activations, "{}", case("none", &none));
        // `per-forward` holds the whole pass's decoded weights at its end.
        assert!(
            per_forward.peak >= per_forward.compressed_on_device + weights,
            "{}",
            case("per-forward", &per_forward)
        );
        // Between passes: the compressed bytes, plus what the cache keeps (nothing for `none`
        // and `per-forward`); the decoded biases and a few hundred bytes of tables may differ.
        for (name, h) in [("none", &none), ("per-forward", &per_forward), ("full", &full), ("adaptive", &adaptive)] {
            let want = h.compressed_on_device + h.cached;
            let slack = 4096 + want / 50;
            assert!(h.idle.abs_diff(want) <= slack, "{}: idle vs {want} resident", case(name, h));
        }
        assert_eq!(none.cached, 0);
        assert_eq!(per_forward.cached, 0);
        assert!(full.cached >= up + down, "{}", case("full", &full));
        // Every compressed policy idles below dense.
        for h in [&none, &per_forward] {
            assert!(h.idle < dense.idle, "{h:?} vs dense {dense:?}");
        }
    }
}
