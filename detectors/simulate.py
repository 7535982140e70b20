"""Synthetic rotating machines with injectable faults, deterministic by seed.

The sound of a machine is built from the physics of what makes it:

- **shaft**: tones at the rotation frequency ``f_r = rpm / 60`` and its harmonics; the speed
  differs a little from run to run (``rpm_spread``) and wanders slowly within a run
  (``rpm_drift``);
- **blade pass**: tones at ``n_blades * f_r`` (blades, vanes, lobes or gear teeth) and
  harmonics, amplitude-modulated by the shaft (residual imbalance);
- **flow**: pink noise rolled off above ``flow_cutoff_hz`` (brown-ish), modulated at the blade
  pass frequency;
- **rolling**: faint broadband excitation of the structural resonance (healthy bearings).

The machine is scaled so that its RMS is ``level``. A **factory background** (mains hum at
harmonics of ``mains_hz``, babble-like speech-band noise, occasional distant impacts, room
noise) is mixed at ``snr_db`` below the *healthy* machine, so a fault never changes the
background level.

Faults (``FAULT_TYPES``) add to the machine, linearly in ``severity`` (0 is the healthy
machine, bit for bit; 1 is severe):

- ``bearing``: outer-race defect; an impulse at the ball pass frequency
  ``BPFO ~ 0.4 * n_balls * f_r`` (with a little slip) rings the resonance at ``resonance_hz``;
- ``imbalance``: a larger 1x shaft tone and a deeper 1x modulation of blade and flow sound;
- ``looseness``: a half-order (0.5x) and 1x motion through a dead-zone nonlinearity (parts
  hit their clearance): many harmonics and subharmonics of 0.5x, and a rattle at each contact;
- ``cavitation``: random bursts of high-pass noise (collapsing vapour bubbles), a crackle;
- ``valve_click``: short transients ringing three resonances at irregular (gamma) intervals;
- ``belt_squeal``: an intermittent frequency-modulated tone at 1-3 kHz with harmonics.

Everything random comes from generators seeded by ``(seed, component)``, each drawn in time
order only, and every filter keeps its state: ``MachineSimulator.next_chunk`` therefore gives
the same samples however the stream is cut into chunks, and ``simulate`` is one chunk.
Faults set on a running simulator fade in and out over ``fade_seconds`` (no clicks); the
healthy machine and the background are unaffected by them.

Uses numpy and scipy.signal (scipy comes with scikit-learn).
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
from scipy import signal

from detectors.errors import DetectorError

FAULT_TYPES = ("bearing", "imbalance", "looseness", "cavitation", "valve_click", "belt_squeal")
MACHINE_KINDS = ("fan", "pump", "compressor", "conveyor", "gearbox")
MIN_SAMPLE_RATE = 8000

# Fault RMS at severity 1 relative to the healthy machine's RMS (imbalance: see _Imbalance).
_FAULT_LEVEL = {
    "bearing": 0.3,
    "looseness": 0.9,
    "cavitation": 0.25,
    "valve_click": 0.6,
    "belt_squeal": 0.5,
}


class SimulationError(DetectorError, ValueError):
    """A machine, fault or simulation parameter is out of range."""


# -- specifications ------------------------------------------------------------------------


_PRESETS: dict[str, dict[str, object]] = {
    "fan": {
        "rpm": 1480.0,
        "n_blades": 7,
        "harmonics": (1.0, 0.45, 0.25, 0.12),
        "blade_harmonics": (1.0, 0.4, 0.15),
        "flow_noise": 1.2,
        "flow_cutoff_hz": 1500.0,
        "resonance_hz": 3200.0,
        "n_balls": 8,
    },
    "pump": {
        "rpm": 2950.0,
        "n_blades": 6,
        "harmonics": (0.8, 0.5, 0.3, 0.2),
        "blade_harmonics": (1.0, 0.6, 0.3),
        "flow_noise": 1.0,
        "flow_cutoff_hz": 2500.0,
        "resonance_hz": 3800.0,
        "n_balls": 9,
    },
    "compressor": {
        "rpm": 2980.0,
        "n_blades": 4,
        "harmonics": (0.6, 0.5, 0.4, 0.3, 0.25, 0.2),
        "blade_harmonics": (1.5, 1.0, 0.6, 0.4),
        "flow_noise": 0.8,
        "flow_cutoff_hz": 4000.0,
        "resonance_hz": 2600.0,
        "n_balls": 10,
    },
    "conveyor": {
        "rpm": 1450.0,
        "n_blades": 0,
        "harmonics": (0.6, 0.3, 0.1),
        "blade_harmonics": (),
        "flow_noise": 1.2,
        "flow_cutoff_hz": 600.0,
        "resonance_hz": 2200.0,
        "n_balls": 7,
    },
    "gearbox": {
        "rpm": 1480.0,
        "n_blades": 23,
        "harmonics": (0.5, 0.3, 0.15),
        "blade_harmonics": (1.5, 0.7, 0.4),
        "flow_noise": 0.5,
        "flow_cutoff_hz": 3000.0,
        "resonance_hz": 4200.0,
        "n_balls": 9,
    },
}


@dataclass(frozen=True)
class MachineSpec:
    """What a simulated machine is made of.

    Amplitudes are RMS values in arbitrary units: only their ratios matter, since the whole
    healthy machine is scaled to the simulator's ``level``.

    Attributes
    ----------
    kind : str
        Free label; ``MachineSpec.preset`` knows ``MACHINE_KINDS``.
    rpm : float
        Nominal shaft speed in revolutions per minute.
    n_blades : int
        Blades, vanes, lobes or gear teeth passing per revolution (0: none).
    harmonics : tuple of float
        RMS of the shaft tones at 1x, 2x, ... ``f_r``.
    blade_harmonics : tuple of float
        RMS of the blade pass tones at 1x, 2x, ... ``n_blades * f_r``.
    blade_modulation : float
        Depth of the 1x amplitude modulation of the blade pass tones (residual imbalance).
    flow_noise : float
        RMS of the broadband flow noise.
    flow_cutoff_hz : float
        Corner above which the (pink) flow noise falls a further 6 dB per octave.
    flow_modulation : float
        Depth of the blade pass modulation of the flow noise.
    resonance_hz, resonance_bandwidth_hz : float
        Structural resonance rung by bearing impacts (2-5 kHz for rolling bearings).
    rolling_noise : float
        RMS of the healthy bearings' broadband excitation of that resonance.
    n_balls : int
        Rolling elements per bearing; the outer-race defect frequency is
        ``0.4 * n_balls * f_r``.
    rpm_spread : float
        Relative standard deviation of the speed from one run (seed) to the next.
    rpm_drift : float
        Relative standard deviation of the slow speed wander within a run.
    level_spread_db : float
        Standard deviation in dB of each component's level from one run to the next.
    """

    kind: str = "fan"
    rpm: float = 1480.0
    n_blades: int = 7
    harmonics: tuple[float, ...] = (1.0, 0.45, 0.25, 0.12)
    blade_harmonics: tuple[float, ...] = (1.0, 0.4, 0.15)
    blade_modulation: float = 0.2
    flow_noise: float = 1.2
    flow_cutoff_hz: float = 1500.0
    flow_modulation: float = 0.15
    resonance_hz: float = 3200.0
    resonance_bandwidth_hz: float = 300.0
    rolling_noise: float = 0.05
    n_balls: int = 8
    rpm_spread: float = 0.01
    rpm_drift: float = 0.002
    level_spread_db: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "harmonics", tuple(float(a) for a in self.harmonics))
        object.__setattr__(self, "blade_harmonics", tuple(float(a) for a in self.blade_harmonics))
        if not self.rpm > 0:
            raise SimulationError(f"rpm must be positive, got {self.rpm}")
        if self.n_blades < 0 or self.n_balls < 1:
            raise SimulationError(
                f"n_blades must be >= 0 and n_balls >= 1, got {self.n_blades} and {self.n_balls}"
            )
        amplitudes = (*self.harmonics, *self.blade_harmonics, self.flow_noise, self.rolling_noise)
        if any(a < 0 for a in amplitudes) or sum(amplitudes) <= 0:
            raise SimulationError("amplitudes must be >= 0 and not all zero")
        for name in ("blade_modulation", "flow_modulation"):
            if not 0 <= getattr(self, name) <= 1:
                raise SimulationError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("flow_cutoff_hz", "resonance_hz", "resonance_bandwidth_hz"):
            if not getattr(self, name) > 0:
                raise SimulationError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("rpm_spread", "rpm_drift", "level_spread_db"):
            if getattr(self, name) < 0:
                raise SimulationError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def preset(cls, kind: str, rpm: float | None = None, **overrides: object) -> MachineSpec:
        """A typical machine of ``kind`` (one of ``MACHINE_KINDS``), optionally at ``rpm``."""
        if kind not in _PRESETS:
            raise SimulationError(
                f"unknown machine kind {kind!r}; choose one of {', '.join(MACHINE_KINDS)}"
            )
        unknown = set(overrides) - {f.name for f in fields(cls) if f.name != "kind"}
        if unknown:
            raise SimulationError(f"unknown MachineSpec fields: {', '.join(sorted(unknown))}")
        params = {**_PRESETS[kind], **overrides}
        if rpm is not None:
            params["rpm"] = rpm
        return cls(kind=kind, **params)  # type: ignore[arg-type]

    @property
    def shaft_hz(self) -> float:
        """Nominal rotation frequency ``f_r`` in Hz."""
        return self.rpm / 60.0

    @property
    def blade_pass_hz(self) -> float:
        """Nominal blade pass frequency ``n_blades * f_r`` in Hz (0 without blades)."""
        return self.n_blades * self.shaft_hz

    @property
    def bpfo_hz(self) -> float:
        """Nominal outer-race bearing defect frequency ``0.4 * n_balls * f_r`` in Hz."""
        return 0.4 * self.n_balls * self.shaft_hz


@dataclass(frozen=True)
class Fault:
    """A fault to inject.

    Attributes
    ----------
    type : str
        One of ``FAULT_TYPES``.
    severity : float
        0 (healthy, bit for bit) to 1 (severe); the fault's amplitude grows linearly with it.
    """

    type: str
    severity: float = 0.5

    def __post_init__(self) -> None:
        if self.type not in FAULT_TYPES:
            raise SimulationError(
                f"unknown fault type {self.type!r}; choose one of {', '.join(FAULT_TYPES)}"
            )
        if not 0.0 <= self.severity <= 1.0:
            raise SimulationError(f"fault severity must be in [0, 1], got {self.severity}")


# -- building blocks -----------------------------------------------------------------------


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent generator for one component, stable under adding other components."""
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _sines(cycles: np.ndarray, amplitudes: list[float], phases: np.ndarray) -> np.ndarray:
    """Sum of ``sqrt(2) * a_h * sin(2 pi h cycles + phase_h)``: tones of RMS ``a_h``."""
    out = np.zeros_like(cycles)
    for h, (a, ph) in enumerate(zip(amplitudes, phases, strict=True), start=1):
        if a:
            out += a * np.sin(2.0 * np.pi * h * cycles + ph)
    return math.sqrt(2.0) * out


def _audible(amplitudes: tuple[float, ...], f0: float, fs: int) -> list[float]:
    """Amplitudes with harmonics above 0.45 fs zeroed (no aliasing)."""
    return [a if (h * f0) < 0.45 * fs else 0.0 for h, a in enumerate(amplitudes, start=1)]


def _resonator(freq_hz: float, bandwidth_hz: float, fs: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-pole resonator ``(b, a)`` scaled to a unit-energy impulse response."""
    freq_hz = min(freq_hz, 0.4 * fs)
    r = math.exp(-math.pi * bandwidth_hz / fs)
    a = np.array([1.0, -2.0 * r * math.cos(2.0 * math.pi * freq_hz / fs), r * r])
    b = np.array([1.0])
    n = int(20 * fs / (math.pi * bandwidth_hz)) + 16
    h = signal.lfilter(b, a, np.r_[1.0, np.zeros(n - 1)])
    return b / math.sqrt(float(h @ h)), a


@functools.lru_cache(maxsize=64)
def _impulse_energy(sos_bytes: bytes, n_sections: int, n: int) -> float:
    sos = np.frombuffer(sos_bytes, dtype=np.float64).reshape(n_sections, 6).copy()
    h = signal.sosfilt(sos, np.r_[1.0, np.zeros(n - 1)])
    return float(h @ h)


def _unit_sos(sos: np.ndarray, seconds: float, fs: int) -> np.ndarray:
    """``sos`` scaled so white noise of unit variance comes out with unit variance."""
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    energy = _impulse_energy(sos.tobytes(), sos.shape[0], int(seconds * fs))
    sos = sos.copy()
    sos[0, :3] /= math.sqrt(energy)
    return sos


# Paul Kellet's economy pink-noise filter (-3 dB/octave over the audio band).
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])


class _Phase:
    """Running phase in cycles of an oscillator whose frequency changes sample by sample."""

    def __init__(self, fs: int) -> None:
        self.fs = fs
        self.cycles = 0.0

    def advance(self, freq_hz: np.ndarray) -> np.ndarray:
        # One sequential cumulative sum, so the result does not depend on chunking.
        out = np.cumsum(np.concatenate(([self.cycles], freq_hz / self.fs)))[1:]
        if out.size:
            self.cycles = float(out[-1])
        return out


class _AR1:
    """Unit-variance first-order autoregressive noise with corner ``fc`` Hz, started stationary."""

    def __init__(self, rng: np.random.Generator, fc: float, fs: int) -> None:
        self.rng = rng
        self.p = math.exp(-2.0 * math.pi * fc / fs)
        self.b = np.array([math.sqrt(1.0 - self.p * self.p)])
        self.a = np.array([1.0, -self.p])
        self.zi = np.array([self.p * rng.standard_normal()])

    def render(self, n: int) -> np.ndarray:
        y, self.zi = signal.lfilter(self.b, self.a, self.rng.standard_normal(n), zi=self.zi)
        return y


class _Noise:
    """Unit-variance white noise through a second-order-sections filter."""

    def __init__(self, rng: np.random.Generator, sos: np.ndarray, fs: int) -> None:
        self.rng = rng
        self.sos = _unit_sos(sos, 2.0, fs)
        self.zi = np.zeros((self.sos.shape[0], 2))

    def render(self, n: int) -> np.ndarray:
        y, self.zi = signal.sosfilt(self.sos, self.rng.standard_normal(n), zi=self.zi)
        return y


class _Filter:
    """A stateful ``lfilter``."""

    def __init__(self, b: np.ndarray, a: np.ndarray) -> None:
        self.b, self.a = b, a
        self.zi = np.zeros(max(len(a), len(b)) - 1)

    def render(self, x: np.ndarray) -> np.ndarray:
        y, self.zi = signal.lfilter(self.b, self.a, x, zi=self.zi)
        return y


class _Events:
    """Event times (in samples) of a renewal process, drawn lazily in time order."""

    def __init__(
        self,
        rng: np.random.Generator,
        draw_interval: Callable[[np.random.Generator], float],
        first: float,
    ) -> None:
        self.rng = rng
        self.draw_interval = draw_interval
        self.next = first

    def in_chunk(self, t0: int, n: int) -> np.ndarray:
        """Sample offsets within ``[t0, t0 + n)`` of the events falling there, shape (k,)."""
        out = []
        while self.next < t0 + n:
            out.append(int(self.next) - t0)
            self.next += self.draw_interval(self.rng)
        return np.asarray(out, dtype=np.int64)


def _shot_power(
    rate_per_sample: float, ea: float, ea2: float, h_sum: float, h_energy: float
) -> float:
    """Mean power of a shot noise (Campbell): impulses of amplitude ``a`` through ``h``."""
    return rate_per_sample * ea2 * h_energy + (rate_per_sample * ea * h_sum) ** 2


def _impulses(n: int, offsets: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    """``(n,)`` zeros with ``amplitudes`` added at ``offsets`` (an excitation for a filter)."""
    x = np.zeros(n)
    np.add.at(x, offsets, amplitudes)
    return x


@dataclass
class _Frame:
    """What one chunk of the healthy machine is made of; faults read it."""

    t0: int
    n: int
    shaft_hz: np.ndarray
    cycles: np.ndarray
    parts: dict[str, np.ndarray]


# -- the healthy machine -------------------------------------------------------------------


class _Machine:
    """Shaft, blade pass, flow and rolling sound of a healthy machine, in raw units."""

    def __init__(self, spec: MachineSpec, fs: int, seed: int) -> None:
        self.spec, self.fs = spec, fs
        harmonics = spec.harmonics or (0.0,)  # keep a 1x slot for imbalance
        run = _rng(seed, "machine", "run")
        self.speed = 1.0 + spec.rpm_spread * float(np.clip(run.standard_normal(), -3, 3))
        f_r = spec.shaft_hz * self.speed

        def jitter(k: int) -> np.ndarray:
            return 10.0 ** (spec.level_spread_db * run.standard_normal(k) / 20.0)

        self.harmonics = [
            a * j for a, j in zip(_audible(harmonics, f_r, fs), jitter(len(harmonics)), strict=True)
        ]
        self.harmonic_phases = run.uniform(0, 2 * np.pi, len(harmonics))
        bpf = spec.n_blades * f_r
        blades = spec.blade_harmonics if spec.n_blades else ()
        self.blades = [
            a * j for a, j in zip(_audible(blades, bpf, fs), jitter(len(blades)), strict=True)
        ]
        self.blade_phases = run.uniform(0, 2 * np.pi, len(blades))
        self.modulation_phase, self.flow_phase = run.uniform(0, 2 * np.pi, 2)
        self.flow_level = spec.flow_noise * float(jitter(1)[0])
        self.rolling_level = spec.rolling_noise * float(jitter(1)[0])

        self.phase = _Phase(fs)
        self.drift = _AR1(_rng(seed, "machine", "drift"), 0.2, fs)
        pink = signal.tf2sos(_PINK_B, _PINK_A)
        lowpass = signal.butter(1, min(spec.flow_cutoff_hz, 0.45 * fs), fs=fs, output="sos")
        self.flow = _Noise(_rng(seed, "machine", "flow"), np.vstack([pink, lowpass]), fs)
        self.rolling_rng = _rng(seed, "machine", "rolling")
        self.resonance = _Filter(*_resonator(spec.resonance_hz, spec.resonance_bandwidth_hz, fs))
        # Nominal power (without the run-to-run jitter) that ``level`` refers to.
        blade_power = sum(a * a for a in _audible(blades, spec.blade_pass_hz, fs))
        flow_mod = spec.flow_modulation if spec.n_blades else 0.0
        self.power = (
            sum(a * a for a in _audible(spec.harmonics, spec.shaft_hz, fs))
            + blade_power * (1.0 + spec.blade_modulation**2 / 2.0)
            + spec.flow_noise**2 * (1.0 + flow_mod**2 / 2.0)
            + spec.rolling_noise**2
        )

    def render(self, t0: int, n: int) -> _Frame:
        spec = self.spec
        shaft_hz = spec.shaft_hz * self.speed * (1.0 + spec.rpm_drift * self.drift.render(n))
        cycles = self.phase.advance(shaft_hz)
        parts = {"shaft": _sines(cycles, self.harmonics, self.harmonic_phases)}
        flow = self.flow_level * self.flow.render(n)
        if spec.n_blades:
            one_x = 1.0 + spec.blade_modulation * np.sin(2 * np.pi * cycles + self.modulation_phase)
            bp_cycles = spec.n_blades * cycles
            parts["blade"] = one_x * _sines(bp_cycles, self.blades, self.blade_phases)
            flow *= 1.0 + spec.flow_modulation * np.sin(2 * np.pi * bp_cycles + self.flow_phase)
        parts["flow"] = flow
        parts["rolling"] = self.rolling_level * self.resonance.render(
            self.rolling_rng.standard_normal(n)
        )
        return _Frame(t0=t0, n=n, shaft_hz=shaft_hz, cycles=cycles, parts=parts)


# -- the factory background ----------------------------------------------------------------


class _Background:
    """Mains hum, babble, distant impacts and room noise; unit power on average."""

    N_TALKERS = 4
    IMPACT_RATE_HZ = 0.5
    IMPACT_SIGMA = 0.4  # lognormal spread of impact amplitudes
    MIX = (0.35, 0.6, 0.15, 0.55)  # RMS of hum, babble, impacts, room
    IMPACT_MODES = ((110.0, 15.0), (320.0, 25.0), (850.0, 40.0))  # distant: low, ringing
    HUM = (0.25, 1.0, 0.35, 0.45, 0.0, 0.2)  # RMS at 1x..6x mains (2x: magnetostriction)

    def __init__(self, fs: int, seed: int, mains_hz: float) -> None:
        self.fs, self.mains_hz = fs, mains_hz
        run = _rng(seed, "background", "run")
        mix = np.array(self.MIX) / math.sqrt(sum(w * w for w in self.MIX))
        weights = mix * 10.0 ** (run.standard_normal(4) / 20.0)  # 1 dB run-to-run spread
        self.w_hum, self.w_babble, self.w_impacts, self.w_room = weights
        hum = np.array(_audible(self.HUM, mains_hz, fs))
        self.hum = hum / math.sqrt(float(hum @ hum))
        self.hum_phases = run.uniform(0, 2 * np.pi, len(self.HUM))
        self.hum_phase = _Phase(fs)
        self.mains_wander = _AR1(_rng(seed, "background", "mains"), 0.1, fs)

        band = signal.butter(2, [300.0, min(3000.0, 0.45 * fs)], btype="band", fs=fs, output="sos")
        self.talkers = [
            (
                _Noise(_rng(seed, "background", "talker", i), band, fs),
                _AR1(_rng(seed, "background", "syllables", i), 3.0, fs),
            )
            for i in range(self.N_TALKERS)
        ]

        rate = self.IMPACT_RATE_HZ / fs
        self.impact_events = _Events(
            _rng(seed, "background", "impacts"),
            lambda r: r.exponential(1.0 / rate),
            first=_rng(seed, "background", "impacts0").exponential(1.0 / rate),
        )
        self.impact_amp_rng = _rng(seed, "background", "impact_amplitudes")
        self.impact_mode_rng = _rng(seed, "background", "impact_modes")
        self.impact_modes = [_Filter(*_resonator(f, bw, fs)) for f, bw in self.IMPACT_MODES]
        ea2 = math.exp(2 * self.IMPACT_SIGMA**2)  # E[a^2] of the lognormal amplitudes
        self.impact_scale = 1.0 / math.sqrt(rate * ea2)  # unit-energy modes: power = rate E[a^2]

        self.room = _Noise(_rng(seed, "background", "room"), signal.tf2sos(_PINK_B, _PINK_A), fs)

    def render(self, t0: int, n: int) -> np.ndarray:
        freq = self.mains_hz * (1.0 + 2e-4 * self.mains_wander.render(n))
        out = self.w_hum * _sines(self.hum_phase.advance(freq), list(self.hum), self.hum_phases)
        babble = np.zeros(n)
        for noise, syllables in self.talkers:
            babble += np.abs(syllables.render(n)) * noise.render(n)
        out += self.w_babble / math.sqrt(self.N_TALKERS) * babble
        offsets = self.impact_events.in_chunk(t0, n)
        k = offsets.size
        amps = self.impact_amp_rng.lognormal(0.0, self.IMPACT_SIGMA, k)
        # uniform doubles, one draw each: chunk sizes cannot change the sequence
        modes = (self.impact_mode_rng.random(k) * len(self.impact_modes)).astype(np.int64)
        impacts = np.zeros(n)
        for m, mode in enumerate(self.impact_modes):
            sel = modes == m
            impacts += mode.render(_impulses(n, offsets[sel], amps[sel]))
        out += self.w_impacts * self.impact_scale * impacts
        out += self.w_room * self.room.render(n)
        return out


# -- faults --------------------------------------------------------------------------------


class _FaultSource:
    """A fault at severity 1, in the machine's raw units; ``render`` adds to the machine."""

    def __init__(self, machine: _Machine, fs: int, key: tuple[int, ...]) -> None:
        # ``key`` seeds the subclass's generators: (seed, "fault", type, start sample).
        self.machine, self.fs = machine, fs
        self.start = int(key[3])  # sample the fault appears at: its events start there
        self.target_rms = math.sqrt(machine.power)

    def render(self, frame: _Frame) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class _Bearing(_FaultSource):
    """Outer-race defect: impulses at BPFO (with slip) ringing the structural resonance."""

    def __init__(self, machine: _Machine, fs: int, key: tuple[int, ...]) -> None:
        super().__init__(machine, fs, key)
        spec = machine.spec
        self.ratio = 0.4 * spec.n_balls
        self.slip = _AR1(_rng(*key, "slip"), 20.0, fs)
        self.amp_rng = _rng(*key, "amplitudes")
        self.phase = _Phase(fs)
        self.phase.cycles = float(_rng(*key, "start").uniform())
        self.resonance = _Filter(*_resonator(spec.resonance_hz, spec.resonance_bandwidth_hz, fs))
        rate = self.ratio * spec.shaft_hz * machine.speed / fs
        power = rate * (1.0 + 0.15**2)  # unit-energy resonance: power = rate * E[a^2]
        self.scale = _FAULT_LEVEL["bearing"] * self.target_rms / math.sqrt(power)

    def render(self, frame: _Frame) -> np.ndarray:
        prev = self.phase.cycles
        freq = self.ratio * frame.shaft_hz * (1.0 + 0.01 * self.slip.render(frame.n))
        cycles = self.phase.advance(freq)
        counts = np.floor(cycles)
        offsets = np.flatnonzero(np.diff(np.concatenate(([math.floor(prev)], counts))) > 0)
        amps = 1.0 + 0.15 * self.amp_rng.standard_normal(offsets.size)
        return self.scale * self.resonance.render(_impulses(frame.n, offsets, amps))


class _Imbalance(_FaultSource):
    """1x shaft tone grows by ``GAIN`` times its RMS; 1x modulation of blade and flow sound."""

    GAIN = 3.0
    MODULATION = 0.3

    def render(self, frame: _Frame) -> np.ndarray:
        m = self.machine
        one_x = np.sin(2 * np.pi * frame.cycles + m.harmonic_phases[0])
        a1 = m.harmonics[0] or 0.3 * self.target_rms
        out = self.GAIN * a1 * math.sqrt(2.0) * one_x
        modulated = frame.parts["flow"] + frame.parts.get("blade", 0.0)
        return out + self.MODULATION * one_x * modulated


class _Looseness(_FaultSource):
    """0.5x and 1x motion through a dead zone (clearance), plus a rattle at each contact."""

    CLEARANCE = 0.8
    RATTLE_SHARE = 0.5  # of the fault's power

    def __init__(self, machine: _Machine, fs: int, key: tuple[int, ...]) -> None:
        super().__init__(machine, fs, key)
        run = _rng(*key, "run")
        self.theta = run.uniform(0, 2 * np.pi, 2)
        grid = np.linspace(0.0, 2.0, 8192, endpoint=False)  # one period of the 0.5x motion
        motion_power = float(np.mean(self._contact(grid) ** 2))
        inside = np.abs(self._motion(grid)) > self.CLEARANCE
        contacts_per_period = int(np.sum(inside & ~np.roll(inside, 1)))
        level = _FAULT_LEVEL["looseness"] * self.target_rms
        self.motion_scale = level * math.sqrt((1.0 - self.RATTLE_SHARE) / motion_power)
        self.rattle = _Filter(*_resonator(1200.0, 250.0, fs))
        self.amp_rng = _rng(*key, "rattle")
        self.inside = False
        rate = contacts_per_period / 2.0 * machine.spec.shaft_hz * machine.speed / fs
        ea2 = math.exp(2 * 0.3**2)  # E[a^2] of lognormal(0, 0.3); unit-energy resonance
        self.rattle_scale = level * math.sqrt(self.RATTLE_SHARE / (rate * ea2))

    def _motion(self, cycles: np.ndarray) -> np.ndarray:
        return np.sin(2 * np.pi * cycles + self.theta[0]) + 0.6 * np.sin(
            np.pi * cycles + self.theta[1]
        )

    def _contact(self, cycles: np.ndarray) -> np.ndarray:
        return self._dead_zone(self._motion(cycles))

    def _dead_zone(self, x: np.ndarray) -> np.ndarray:
        """Motion beyond the clearance (zero inside it): a clipping-like nonlinearity."""
        return np.sign(x) * np.maximum(np.abs(x) - self.CLEARANCE, 0.0)

    def render(self, frame: _Frame) -> np.ndarray:
        x = self._motion(frame.cycles)
        inside = np.abs(x) > self.CLEARANCE
        onsets = np.flatnonzero(
            np.diff(np.concatenate(([self.inside], inside)).astype(np.int8)) > 0
        )
        if frame.n:
            self.inside = bool(inside[-1])
        contact = self._dead_zone(x)
        amps = self.amp_rng.lognormal(0.0, 0.3, onsets.size)
        rattle = self.rattle.render(_impulses(frame.n, onsets, amps))
        return self.motion_scale * contact + self.rattle_scale * rattle


class _Cavitation(_FaultSource):
    """Poisson bursts of high-pass noise with a fast decay: collapsing vapour bubbles."""

    RATE_HZ = 100.0
    DECAY_S = 0.002
    SIGMA = 0.5  # lognormal spread of burst amplitudes

    def __init__(self, machine: _Machine, fs: int, key: tuple[int, ...]) -> None:
        super().__init__(machine, fs, key)
        rate = self.RATE_HZ / fs
        self.events = _Events(
            _rng(*key, "events"),
            lambda r: r.exponential(1.0 / rate),
            first=self.start + _rng(*key, "first").exponential(1.0 / rate),
        )
        self.amp_rng = _rng(*key, "amplitudes")
        d = math.exp(-1.0 / (self.DECAY_S * fs))
        self.envelope = _Filter(np.array([1.0]), np.array([1.0, -d]))
        highpass = signal.butter(2, min(2000.0, 0.3 * fs), btype="high", fs=fs, output="sos")
        self.carrier = _Noise(_rng(*key, "carrier"), highpass, fs)
        sigma = self.SIGMA
        ea, ea2 = math.exp(sigma**2 / 2), math.exp(2 * sigma**2)
        power = _shot_power(rate, ea, ea2, 1.0 / (1.0 - d), 1.0 / (1.0 - d * d))
        self.sigma = sigma
        self.scale = _FAULT_LEVEL["cavitation"] * self.target_rms / math.sqrt(power)

    def render(self, frame: _Frame) -> np.ndarray:
        offsets = self.events.in_chunk(frame.t0, frame.n)
        amps = self.amp_rng.lognormal(0.0, self.sigma, offsets.size)
        env = self.envelope.render(_impulses(frame.n, offsets, amps))
        return self.scale * env * self.carrier.render(frame.n)


class _ValveClick(_FaultSource):
    """Short transients ringing three resonances, at irregular (gamma) intervals."""

    MEAN_INTERVAL_S = 0.15
    SIGMA = 0.2  # lognormal spread of click amplitudes
    SHAPE = 4.0

    def __init__(self, machine: _Machine, fs: int, key: tuple[int, ...]) -> None:
        super().__init__(machine, fs, key)
        run = _rng(*key, "run")
        mean = self.MEAN_INTERVAL_S * fs
        scale = mean / self.SHAPE
        self.events = _Events(
            _rng(*key, "events"),
            lambda r: r.gamma(self.SHAPE, scale),
            first=self.start + float(run.uniform(0.0, mean)),
        )
        self.amp_rng = _rng(*key, "amplitudes")
        # Valve plate on its seat (2-4 kHz), valve body (0.7-1.1 kHz), housing (250-400 Hz).
        modes = (
            (2000.0, 4000.0, 250.0, 0.7),
            (700.0, 1100.0, 120.0, 0.7),
            (250.0, 400.0, 40.0, 1.0),
        )
        self.modes = [
            (w, _Filter(*_resonator(float(run.uniform(lo, hi)), bw, fs))) for lo, hi, bw, w in modes
        ]
        # Energy of the combined impulse response (the modes overlap in time).
        probe = np.r_[1.0, np.zeros(int(0.1 * fs))]
        h = sum(w * signal.lfilter(f.b, f.a, probe) for w, f in self.modes)
        power = (1.0 / mean) * math.exp(2 * self.SIGMA**2) * float(h @ h)
        self.scale = _FAULT_LEVEL["valve_click"] * self.target_rms / math.sqrt(power)

    def render(self, frame: _Frame) -> np.ndarray:
        offsets = self.events.in_chunk(frame.t0, frame.n)
        x = _impulses(frame.n, offsets, self.amp_rng.lognormal(0.0, self.SIGMA, offsets.size))
        return self.scale * sum(w * f.render(x) for w, f in self.modes)


class _BeltSqueal(_FaultSource):
    """Intermittent stick-slip squeal: an FM tone at 1-3 kHz with harmonics, gated on and off."""

    ON_S = (0.3, 1.2)
    OFF_S = (0.2, 1.0)
    HARMONICS = (1.0, 0.35, 0.12)

    def __init__(self, machine: _Machine, fs: int, key: tuple[int, ...]) -> None:
        super().__init__(machine, fs, key)
        run = _rng(*key, "run")
        self.f0 = float(run.uniform(1000.0, 3000.0))
        self.vibrato_hz = float(run.uniform(5.0, 9.0))
        self.phases = run.uniform(0, 2 * np.pi, 1 + len(self.HARMONICS))
        self.gate_rng = _rng(*key, "gate")
        self.on = bool(run.uniform() < 0.5)
        self.remaining = self._duration()
        self.smooth = _Filter(
            np.array([1.0 - math.exp(-1.0 / (0.015 * fs))]),
            np.array([1.0, -math.exp(-1.0 / (0.015 * fs))]),
        )
        self.wander = _AR1(_rng(*key, "wander"), 0.5, fs)
        self.phase = _Phase(fs)
        amps = np.array(_audible(self.HARMONICS, self.f0 * 1.03, fs))
        self.amps = list(amps / math.sqrt(float(amps @ amps)))
        duty = np.mean(self.ON_S) / (np.mean(self.ON_S) + np.mean(self.OFF_S))
        self.scale = _FAULT_LEVEL["belt_squeal"] * self.target_rms / math.sqrt(duty)

    def _duration(self) -> int:
        lo, hi = self.ON_S if self.on else self.OFF_S
        return max(1, int(self.gate_rng.uniform(lo, hi) * self.fs))

    def render(self, frame: _Frame) -> np.ndarray:
        n = frame.n
        gate = np.zeros(n)
        filled = 0
        while filled < n:
            m = min(self.remaining, n - filled)
            gate[filled : filled + m] = float(self.on)
            filled += m
            self.remaining -= m
            if self.remaining == 0:
                self.on = not self.on
                self.remaining = self._duration()
        gate = self.smooth.render(gate)
        t = (frame.t0 + np.arange(n)) / self.fs
        vibrato = np.sin(2 * np.pi * self.vibrato_hz * t + self.phases[0])
        freq = self.f0 * (1.0 + 0.006 * vibrato + 0.01 * self.wander.render(n))
        tone = _sines(self.phase.advance(freq), self.amps, self.phases[1:])
        return self.scale * gate * tone


_FAULT_SOURCES = {
    "bearing": _Bearing,
    "imbalance": _Imbalance,
    "looseness": _Looseness,
    "cavitation": _Cavitation,
    "valve_click": _ValveClick,
    "belt_squeal": _BeltSqueal,
}


class _ActiveFault:
    """A fault source with a severity that ramps linearly to its target (no clicks)."""

    def __init__(self, source: _FaultSource, severity: float) -> None:
        self.source = source
        self.start = self.target = severity
        self.slope = 0.0
        self.since = 0

    def ramp_to(self, target: float, now: int, current: float, fade: int) -> None:
        self.start, self.target, self.since = current, target, now
        self.slope = (target - current) / max(fade, 1)

    def severity_at(self, t: np.ndarray) -> np.ndarray:
        s = self.start + self.slope * (t - self.since + 1)
        lo, hi = sorted((self.start, self.target))
        return np.clip(s, lo, hi)

    def current(self, now: int) -> float:
        return float(self.severity_at(np.array([now - 1]))[0])

    def finished(self, now: int) -> bool:
        return self.target == 0.0 and self.current(now) == 0.0


# -- public interface ----------------------------------------------------------------------


class MachineSimulator:
    """A running machine in a factory: consecutive chunks of one continuous sound.

    Parameters
    ----------
    spec : MachineSpec or str
        The machine; a kind name means ``MachineSpec.preset(kind)``.
    sample_rate : int
        At least ``MIN_SAMPLE_RATE``.
    snr_db : float or None
        Healthy machine power over background power in dB; None leaves the background out.
        May be changed between chunks (the attribute ``snr_db``).
    seed : int
        Non-negative; everything random (speed, levels, phases, noise, events) follows from it.
    fault : Fault, optional
        Present from the first sample. Set ``fault`` later to inject, change or clear one.
    level : float
        RMS of the healthy machine in full-scale units (the output is clipped to [-1, 1]).
    mains_hz : float
        Mains frequency of the background hum (50 or 60).
    fade_seconds : float
        Time a fault set on the running machine takes to fade in or out.

    Attributes
    ----------
    spec : MachineSpec
    fade_samples : int
    samples_emitted, seconds_emitted : int, float
        How much has been produced; the next chunk starts there.
    fault : Fault or None
        Settable: a new fault fades in, a cleared or replaced one fades out, a new severity
        of the same fault type ramps. The healthy machine and background are unaffected.
    """

    def __init__(
        self,
        spec: MachineSpec | str,
        sample_rate: int = 16000,
        snr_db: float | None = 10.0,
        seed: int = 0,
        fault: Fault | None = None,
        level: float = 0.05,
        mains_hz: float = 50.0,
        fade_seconds: float = 0.05,
    ) -> None:
        if isinstance(spec, str):
            spec = MachineSpec.preset(spec)
        if int(sample_rate) != sample_rate or sample_rate < MIN_SAMPLE_RATE:
            raise SimulationError(
                f"sample_rate must be an integer >= {MIN_SAMPLE_RATE} Hz, got {sample_rate}"
            )
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise SimulationError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0 < level <= 1:
            raise SimulationError(f"level must be in (0, 1], got {level}")
        if fade_seconds < 0:
            raise SimulationError(f"fade_seconds must be >= 0, got {fade_seconds}")
        if not 0 < mains_hz < 0.45 * sample_rate:
            raise SimulationError(f"mains_hz must be positive and below Nyquist, got {mains_hz}")
        if snr_db is not None and not math.isfinite(snr_db):
            raise SimulationError(f"snr_db must be a finite number of dB or None, got {snr_db}")
        if fault is not None and not isinstance(fault, Fault):
            raise SimulationError(f"fault must be a Fault or None, got {fault!r}")
        self.spec = spec
        self.sample_rate = int(sample_rate)
        self.snr_db = snr_db
        self.seed = int(seed)
        self.level = float(level)
        self.fade_samples = round(fade_seconds * self.sample_rate)
        self._t = 0
        self._machine = _Machine(spec, self.sample_rate, self.seed)
        self._background = _Background(self.sample_rate, self.seed, mains_hz)
        self._faults: list[_ActiveFault] = []
        self._fault: Fault | None = None
        if fault is not None:
            self._faults.append(_ActiveFault(self._new_source(fault.type), fault.severity))
            self._fault = fault

    @property
    def samples_emitted(self) -> int:
        """Samples produced so far (the index of the next chunk's first sample)."""
        return self._t

    @property
    def seconds_emitted(self) -> float:
        return self._t / self.sample_rate

    @property
    def fault(self) -> Fault | None:
        """The fault now present (or fading in); None for a healthy machine."""
        return self._fault

    @fault.setter
    def fault(self, fault: Fault | None) -> None:
        if fault is not None and not isinstance(fault, Fault):
            raise SimulationError(f"fault must be a Fault or None, got {fault!r}")
        now = self._t
        kept = False
        for active in self._faults:
            current = active.current(now)
            if fault is not None and isinstance(active.source, _FAULT_SOURCES[fault.type]):
                active.ramp_to(fault.severity, now, current, self.fade_samples)
                kept = True
            else:
                active.ramp_to(0.0, now, current, self.fade_samples)
        if fault is not None and not kept:
            active = _ActiveFault(self._new_source(fault.type), 0.0)
            active.ramp_to(fault.severity, now, 0.0, self.fade_samples)
            self._faults.append(active)
        self._fault = fault

    def _new_source(self, fault_type: str) -> _FaultSource:
        key = (self.seed, zlib.crc32(b"fault"), zlib.crc32(fault_type.encode()), self._t)
        return _FAULT_SOURCES[fault_type](self._machine, self.sample_rate, key)

    def next_samples(self, n: int) -> np.ndarray:
        """The next ``n`` samples, shape ``(n,)`` float32 in [-1, 1]."""
        if n < 0:
            raise SimulationError(f"cannot produce a negative number of samples ({n})")
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        t0 = self._t
        frame = self._machine.render(t0, n)
        machine = sum(frame.parts.values())
        if self._faults:
            t = np.arange(t0, t0 + n)
            for active in self._faults:
                machine = machine + active.severity_at(t) * active.source.render(frame)
            self._faults = [a for a in self._faults if not a.finished(t0 + n)]
        out = (self.level / math.sqrt(self._machine.power)) * machine
        background = self._background.render(t0, n)
        if self.snr_db is not None:
            out = out + self.level * 10.0 ** (-self.snr_db / 20.0) * background
        self._t = t0 + n
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def next_chunk(self, seconds: float) -> np.ndarray:
        """The next ``round(seconds * sample_rate)`` samples, shape ``(n,)`` float32 in [-1, 1]."""
        if seconds < 0:
            raise SimulationError(f"seconds must be >= 0, got {seconds}")
        return self.next_samples(round(seconds * self.sample_rate))


def simulate(
    spec: MachineSpec | str,
    seconds: float,
    sample_rate: int = 16000,
    snr_db: float | None = 10.0,
    fault: Fault | None = None,
    seed: int = 0,
    level: float = 0.05,
    mains_hz: float = 50.0,
) -> np.ndarray:
    """One clip of a machine in a factory.

    Parameters
    ----------
    spec : MachineSpec or str (a kind for ``MachineSpec.preset``)
    seconds : float
    sample_rate : int
    snr_db : float or None
        Healthy machine power over background power in dB; None: no background.
    fault : Fault, optional
    seed : int
    level : float
        RMS of the healthy machine.
    mains_hz : float

    Returns
    -------
    np.ndarray, shape (round(seconds * sample_rate),), float32 in [-1, 1]
        Identical for identical arguments; the same as the first chunks of a
        ``MachineSimulator`` with the same arguments, however they are cut.
    """
    sim = MachineSimulator(
        spec, sample_rate, snr_db=snr_db, seed=seed, fault=fault, level=level, mains_hz=mains_hz
    )
    return sim.next_chunk(seconds)


__all__ = [
    "FAULT_TYPES",
    "MACHINE_KINDS",
    "Fault",
    "MachineSimulator",
    "MachineSpec",
    "SimulationError",
    "simulate",
]
