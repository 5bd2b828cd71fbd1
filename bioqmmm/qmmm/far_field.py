"""The periodic Ewald potential of every MM charge about one expansion centre, and its reaction.

The far field of the periodic embedding needs, per step, two sums over every MM charge j:

* before the SCF, the derivatives up to third order at the QM centre c of
  phi(x) = sum_j q_j psi(x - r_j), with psi the Ewald kernel (tin-foil, neutralising background);
* after it, the gradient on every charge of the interaction U_j = m0 psi + m1.grad psi +
  1/2 m2 : grad grad psi of the QM multipole (m0, m1, m2) at c with a unit charge at r_j.

psi = real-space erfc(alpha r)/r over the images within ``real_cutoff`` + reciprocal
part by smooth particle-mesh Ewald (U. Essmann et al., J. Chem. Phys. 103, 8577 (1995)): the MM charges
are spread on a grid with cardinal B-splines of order 6, convolved by FFT with the Ewald kernel and the
B-spline moduli, and interpolated back with the same B-splines at c (derivatives up to third order) and,
for the multipole spread at c, at every charge. The mesh makes psi approximate (to ``tolerance``) but the
reported energy is an exact, smooth function of every coordinate and the gradients are its exact
derivatives, so energy is conserved. The cost is O(N) in the number of MM charges plus one FFT pair per
sum, instead of the O(N K) plane-wave sum over K wave vectors.

Units: nm and e (potentials per unit charge, no Coulomb constant).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from itertools import combinations_with_replacement, product

import numba
import numpy as np
import scipy.fft

from bioqmmm.qmmm.ewald import FieldTensors, multipole_response_sum, point_tensors_at

#: B-spline order of the mesh (degree 5: the third derivatives at the centre, which enter the forces,
#: are continuous; an even order keeps the B-spline moduli finite at the Nyquist frequency).
SPLINE_ORDER = 6

#: Real-space cutoff of the Ewald split (nm). The real-space sum costs ~(4/3) pi r^3 rho image pairs
#: and the mesh grid scales as (L / r)^3; 3 nm keeps the grid at ~36^3 for a 20k-atom box with ~11k
#: real-space pairs.
REAL_SPACE_CUTOFF = 3.0

#: erfc(alpha r_c) at the real-space cutoff. The truncated real-space sum jumps by this fraction of a
#: charge's potential when an image crosses the cutoff; kept far below the mesh tolerance so the energy
#: is continuous to ~1e-9 (the mesh part is smooth: B-splines of order 6 are C^4).
REAL_SPACE_TAIL = 1e-9

#: Grid points per unit of alpha L at tolerance 1e-5, scaled as tol^(-1/6) for others. Calibrated against
#: plain Ewald sums (tests/test_periodic.py, rectangular and triclinic boxes): the tensors t0..t3 at the
#: centre and the multipole gradients at the charges are then within ~2e-6 (tol 1e-5) and ~1e-7 (tol 1e-8)
#: of the largest element.
GRID_DENSITY = 3.0


def bspline_table(fraction: float, derivatives: int) -> np.ndarray:
    """Cardinal B-spline M_p (p = SPLINE_ORDER) and its derivatives at fraction + s, s = 0..p-1.

    Row k holds the k-th derivative. M_1 = 1 on [0, 1); M_n(x) = [x M_{n-1}(x) + (n - x) M_{n-1}(x - 1)] /
    (n - 1); d^k M_p(x) = sum_i (-1)^i C(k, i) M_{p-k}(x - i). Grid point floor(u) - s gets M_p(u - floor(u) + s).
    """
    x = fraction + np.arange(SPLINE_ORDER)
    lower = [np.where(np.arange(SPLINE_ORDER) == 0, 1.0, 0.0)]  # lower[n - 1] = M_n(x)
    for n in range(2, SPLINE_ORDER + 1):
        shifted = np.concatenate([[0.0], lower[-1][:-1]])  # M_{n-1}(x - 1)
        lower.append((x * lower[-1] + (n - x) * shifted) / (n - 1))
    table = np.zeros((derivatives + 1, SPLINE_ORDER))
    for k in range(derivatives + 1):
        for i in range(k + 1):
            table[k, i:] += (-1) ** i * math.comb(k, i) * lower[SPLINE_ORDER - k - 1][: SPLINE_ORDER - i]
    return table


@numba.njit(cache=True, inline="always")
def _fill_bspline(fraction: float, table: np.ndarray, j: int, axis: int) -> None:
    """:func:`bspline_table` with one derivative, written into table[j, axis] (shape (2, p)) for the hot
    loops: the same recursion unrolled in place, a few ns per table instead of ~100 for a general one."""
    p = SPLINE_ORDER
    for s in range(1, p):
        table[j, axis, 0, s] = 0.0
    table[j, axis, 0, 0] = 1.0
    for n in range(2, p):
        inverse = 1.0 / (n - 1)
        for s in range(n - 1, 0, -1):
            x = fraction + s
            table[j, axis, 0, s] = (x * table[j, axis, 0, s] + (n - x) * table[j, axis, 0, s - 1]) * inverse
        table[j, axis, 0, 0] = fraction * table[j, axis, 0, 0] * inverse
    table[j, axis, 1, 0] = table[j, axis, 0, 0]  # M_p'(x) = M_{p-1}(x) - M_{p-1}(x - 1)
    for s in range(1, p):
        table[j, axis, 1, s] = table[j, axis, 0, s] - table[j, axis, 0, s - 1]
    inverse = 1.0 / (p - 1)
    for s in range(p - 1, 0, -1):
        x = fraction + s
        table[j, axis, 0, s] = (x * table[j, axis, 0, s] + (p - x) * table[j, axis, 0, s - 1]) * inverse
    table[j, axis, 0, 0] = fraction * table[j, axis, 0, 0] * inverse


@numba.njit(cache=True, parallel=True)
def _supports(u: np.ndarray, shape: tuple, w: np.ndarray, index: np.ndarray) -> None:
    """B-spline values and first derivatives w (n, 3, 2, p) at grid coordinates u (n, 3), and the wrapped
    grid indices index (n, 3, p) = (floor(u) - s) mod shape they belong to: computed once per geometry for
    both sums. The buffers are the caller's, reused: fresh large arrays cost a page fault per page."""
    for j in numba.prange(len(u)):
        for a in range(3):
            f = math.floor(u[j, a])
            _fill_bspline(u[j, a] - f, w, j, a)
            start = int(f) % shape[a]
            for s in range(SPLINE_ORDER):
                index[j, a, s] = start - s if start >= s else start - s + shape[a]


@numba.njit(cache=True, parallel=True)
def _spread(w: np.ndarray, index: np.ndarray, q: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """Q(g) = sum_j q_j M(u_j - g) from the supports of :func:`_supports`; grids (chunks, *shape) is scratch,
    one grid per chunk of charges (chunks run in parallel), summed at the end."""
    order = SPLINE_ORDER
    n, chunks = len(q), len(grids)
    for t in numba.prange(chunks):
        grid = grids[t]
        grid[:] = 0.0
        for j in range(t * n // chunks, (t + 1) * n // chunks):
            for s0 in range(order):
                c0 = q[j] * w[j, 0, 0, s0]
                i0 = index[j, 0, s0]
                for s1 in range(order):
                    c1 = c0 * w[j, 1, 0, s1]
                    i1 = index[j, 1, s1]
                    for s2 in range(order):
                        grid[i0, i1, index[j, 2, s2]] += c1 * w[j, 2, 0, s2]
    return grids.sum(axis=0)


@numba.njit(cache=True, parallel=True)
def _interpolated_gradient(w: np.ndarray, index: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """d/du of sum_g M(u_j - g) grid(g) at every point, (n, 3) in grid units, from their supports."""
    n = len(w)
    order = SPLINE_ORDER
    out = np.empty((n, 3))
    for j in numba.prange(n):
        g0 = g1 = g2 = 0.0
        for s0 in range(order):
            i0 = index[j, 0, s0]
            for s1 in range(order):
                i1 = index[j, 1, s1]
                value = derivative = 0.0
                for s2 in range(order):
                    v = grid[i0, i1, index[j, 2, s2]]
                    value += v * w[j, 2, 0, s2]
                    derivative += v * w[j, 2, 1, s2]
                g0 += w[j, 0, 1, s0] * w[j, 1, 0, s1] * value
                g1 += w[j, 0, 0, s0] * w[j, 1, 1, s1] * value
                g2 += w[j, 0, 0, s0] * w[j, 1, 0, s1] * derivative
        out[j, 0], out[j, 1], out[j, 2] = g0, g1, g2
    return out


@numba.njit(cache=True)
def _images(d0: np.ndarray, shifts: np.ndarray, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Images d0[j] + shift closer than r_max to the origin, and their owners j."""
    inside = np.zeros((len(d0), len(shifts)), dtype=np.bool_)
    for j in range(len(d0)):
        for s in range(len(shifts)):
            x0, x1, x2 = d0[j, 0] + shifts[s, 0], d0[j, 1] + shifts[s, 1], d0[j, 2] + shifts[s, 2]
            inside[j, s] = x0 * x0 + x1 * x1 + x2 * x2 < r_max * r_max
    count = inside.sum()
    images = np.empty((count, 3))
    owners = np.empty(count, dtype=np.int64)
    k = 0
    for j in range(len(d0)):
        for s in range(len(shifts)):
            if inside[j, s]:
                for a in range(3):
                    images[k, a] = d0[j, a] + shifts[s, a]
                owners[k] = j
                k += 1
    return images, owners


def images_within(d0: np.ndarray, box: np.ndarray, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Periodic images d0 + n.box (n integer) closer than r_max to the origin, and their owners.

    d0 are minimum-image displacements, so |d0| <= R = 1/2 sqrt(sum_a box_aa^2); a lattice shift s
    can bring an image within r_max only if |s| < r_max + R (reach rounded up to 0.1 nm for the cache).
    """
    reach = r_max + 0.5 * math.sqrt(float(np.sum(np.diag(box) ** 2)))
    shifts = _lattice_shifts(tuple(np.round(box, 12).ravel()), math.ceil(10.0 * reach) / 10.0)
    return _images(np.ascontiguousarray(d0, dtype=float), shifts, r_max)


def _bspline_moduli(size: int) -> np.ndarray:
    """|b(m)|^2 = 1 / |sum_{k=0}^{p-2} M_p(k + 1) exp(2 pi i m k / size)|^2 for m = 0..size-1 (p even:
    the sum does not vanish at the Nyquist frequency)."""
    order = SPLINE_ORDER
    knots = bspline_table(0.0, 0)[0]  # M(s), s = 0..order-1
    k = np.arange(order - 1)
    phase = np.exp(2j * np.pi * np.outer(np.arange(size), k) / size)
    return 1.0 / np.abs(phase @ knots[1:order]) ** 2


@functools.lru_cache(maxsize=16)
def _lattice_shifts(box_key: tuple[float, ...], reach: float) -> np.ndarray:
    """Lattice vectors n.box shorter than ``reach`` (box given as its 9 numbers, row by row)."""
    box = np.reshape(box_key, (3, 3))
    n_max = [int(math.ceil(reach / box[a, a])) for a in range(3)]
    shifts = [np.asarray(n, dtype=float) @ box for n in product(*(range(-m, m + 1) for m in n_max))]
    return np.array([s for s in shifts if np.linalg.norm(s) < reach])


#: Multi-indices (counts of derivatives along each grid axis) up to third order, for the centre.
_ORDERS = [tuple(combo.count(axis) for axis in range(3)) for n in range(4)
           for combo in combinations_with_replacement(range(3), n)]


@dataclass(frozen=True)
class FarFieldGeometry:
    """What both sums need of one configuration: the expansion centres as offsets from the origin
    (shifts, (k, 3)), the real-space images (image - origin) within reach of every centre and their owners,
    every charge's B-spline support on the mesh (valid until the next geometry), and each centre's support
    (grid blocks for np.ix_, tables (k, axis, derivative 0..3, s))."""

    shifts: np.ndarray
    images: np.ndarray
    owners: np.ndarray
    weights: np.ndarray
    index: np.ndarray
    centre_blocks: tuple[tuple[np.ndarray, ...], ...]
    centre_tables: np.ndarray


class EwaldFarField:
    """Ewald sums of all MM charges about a centre, for one periodic box (cache it per box).

    box: rows are the box vectors (nm); tolerance: relative accuracy of the mesh (grid spacing from
    ``GRID_DENSITY``); the split alpha = sqrt(-ln ``REAL_SPACE_TAIL``) / ``real_cutoff``.
    """

    def __init__(self, box: np.ndarray, tolerance: float, real_cutoff: float = REAL_SPACE_CUTOFF) -> None:
        self.box = np.array(box, dtype=float)
        self.real_cutoff = real_cutoff
        self.alpha = math.sqrt(-math.log(REAL_SPACE_TAIL)) / real_cutoff
        volume = abs(np.linalg.det(self.box))
        density = GRID_DENSITY * (tolerance / 1e-5) ** (-1.0 / 6.0)
        self.shape = tuple(
            int(scipy.fft.next_fast_len(max(2 * SPLINE_ORDER, math.ceil(density * self.alpha * length))))
            for length in np.linalg.norm(self.box, axis=1)
        )
        # u = r @ to_grid: grid coordinates; d/dr_a = sum_i to_grid[a, i] d/du_i
        self.to_grid = np.linalg.inv(self.box) * np.asarray(self.shape, dtype=float)[None, :]
        self.background = -math.pi / (self.alpha**2 * volume)
        self.kernel = self._convolution_kernel(volume)
        self._grids = np.empty((numba.get_num_threads(), *self.shape))  # spreading scratch, one per thread
        self._supports: tuple[np.ndarray, np.ndarray] = (np.empty((0, 3, 2, SPLINE_ORDER)), np.empty((0, 3, 0)))

    def _convolution_kernel(self, volume: float) -> np.ndarray:
        """exp(-pi^2 m^2 / alpha^2) / (pi V m^2) times the B-spline moduli, rfft layout, 0 at m = 0."""
        n0, n1, n2 = self.shape
        freq = np.meshgrid(np.fft.fftfreq(n0, 1.0 / n0), np.fft.fftfreq(n1, 1.0 / n1), np.fft.rfftfreq(n2, 1.0 / n2),
                           indexing="ij")
        m = np.stack(freq, axis=-1) @ np.linalg.inv(self.box).T  # m1 b1* + m2 b2* + m3 b3*
        m2 = np.einsum("...a,...a->...", m, m)
        m2[0, 0, 0] = 1.0
        kernel = np.exp(-(math.pi**2) * m2 / self.alpha**2) / (math.pi * volume * m2)
        kernel[0, 0, 0] = 0.0
        moduli = [_bspline_moduli(n) for n in self.shape]
        return kernel * moduli[0][:, None, None] * moduli[1][None, :, None] * moduli[2][None, None, : n2 // 2 + 1]

    def _convolve(self, grid: np.ndarray) -> np.ndarray:
        spectrum = scipy.fft.rfftn(grid) * self.kernel
        return scipy.fft.irfftn(spectrum, s=self.shape) * (self.shape[0] * self.shape[1] * self.shape[2])

    def _centre_support(self, center: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """Grid indices of the centre's B-spline support (for np.ix_) and its tables (axis, derivative 0..3, s)."""
        u = center @ self.to_grid
        base = np.floor(u)
        index = tuple((int(base[a]) - np.arange(SPLINE_ORDER)) % self.shape[a] for a in range(3))
        tables = np.array([bspline_table(u[a] - base[a], 3) for a in range(3)])
        return np.ix_(*index), tables

    def geometry(self, origin: np.ndarray, d0: np.ndarray, centres: np.ndarray | None = None) -> FarFieldGeometry:
        """Real-space images and mesh supports of charges at ``origin + d0`` (d0: minimum image, nm), for
        expansion centres ``centres`` (k, 3) near the origin (nm; default: the origin itself)."""
        origin = np.asarray(origin, dtype=float)
        centres = origin[None] if centres is None else np.asarray(centres, dtype=float).reshape(-1, 3)
        shifts = centres - origin
        # an image leaves this set only beyond real_cutoff of every centre, where erfc(alpha r) < REAL_SPACE_TAIL
        reach = self.real_cutoff + float(np.linalg.norm(shifts, axis=1).max())
        images, owners = images_within(d0, self.box, reach)
        if len(self._supports[0]) != len(d0):  # buffers reused while the number of charges stays
            self._supports = (np.empty((len(d0), 3, 2, SPLINE_ORDER)),
                              np.empty((len(d0), 3, SPLINE_ORDER), dtype=np.int64))
        weights, index = self._supports
        _supports(np.ascontiguousarray((origin + d0) @ self.to_grid), self.shape, weights, index)
        supports = [self._centre_support(c) for c in centres]
        return FarFieldGeometry(shifts, images, owners, weights, index, tuple(block for block, _ in supports),
                                np.array([tables for _, tables in supports]))

    def tensors(self, geometry: FarFieldGeometry, q: np.ndarray) -> FieldTensors:
        """phi and its first three derivatives at each centre of the charges q (e) of ``geometry``:
        t0 (k,), t1 (k, 3), t2 (k, 3, 3), t3 (k, 3, 3, 3)."""
        potential = self._convolve(_spread(geometry.weights, geometry.index, q, self._grids))
        tables = geometry.centre_tables
        local = np.array([potential[block] for block in geometry.centre_blocks])
        by_order = {o: np.einsum("kxyz,kx,ky,kz->k", local, tables[:, 0, o[0]], tables[:, 1, o[1]],
                                 tables[:, 2, o[2]]) for o in _ORDERS}
        u1 = np.stack([by_order[(1, 0, 0)], by_order[(0, 1, 0)], by_order[(0, 0, 1)]], axis=-1)
        u2 = np.stack([np.stack([by_order[_multi_index(i, j)] for j in range(3)], axis=-1) for i in range(3)], axis=-2)
        u3 = np.stack([np.stack([np.stack([by_order[_multi_index(i, j, k)] for k in range(3)], axis=-1)
                                 for j in range(3)], axis=-2) for i in range(3)], axis=-3)
        g = self.to_grid
        mesh = FieldTensors(by_order[(0, 0, 0)] + self.background * float(np.sum(q)), u1 @ g.T,
                            np.einsum("ai,kij,bj->kab", g, u2, g), np.einsum("ai,bj,cl,kijl->kabc", g, g, g, u3))
        return mesh + point_tensors_at(geometry.shifts, -geometry.images, q[geometry.owners], self.alpha,
                                       self.real_cutoff)

    def multipole_gradient(self, geometry: FarFieldGeometry, m0: np.ndarray, m1: np.ndarray,
                           m2: np.ndarray) -> np.ndarray:
        """grad_x U at x = c - r_j for U = sum_c m0 psi + m1.grad psi + 1/2 m2 : grad grad psi, (n, 3): the
        multipoles m0 (k,), m1 (k, 3), m2 (k, 3, 3) at the centres c. The force on a charge q_j is q_j times this.
        """
        g = self.to_grid
        m0 = np.asarray(m0, dtype=float).reshape(-1)
        m1 = np.asarray(m1, dtype=float).reshape(-1, 3)
        m2 = np.asarray(m2, dtype=float).reshape(-1, 3, 3)
        spread = np.zeros(self.shape)
        for c, (block, tables) in enumerate(zip(geometry.centre_blocks, geometry.centre_tables, strict=True)):
            mu1 = g.T @ m1[c]  # the multipole in grid units
            mu2 = g.T @ m2[c] @ g
            local = m0[c] * np.einsum("x,y,z->xyz", tables[0, 0], tables[1, 0], tables[2, 0])
            for o in _ORDERS[1:10]:  # d/dc of M(u_c - g): the centre's B-spline derivatives, orders 1 and 2
                axes = [a for a in range(3) for _ in range(o[a])]
                coefficient = mu1[axes[0]] if len(axes) == 1 else mu2[axes[0], axes[1]] * (0.5 if o.count(2) else 1.0)
                local += coefficient * np.einsum("x,y,z->xyz", tables[0, o[0]], tables[1, o[1]], tables[2, o[2]])
            np.add.at(spread, block, local)
        potential = self._convolve(spread)
        # U_j = sum_g M(u_j - g) potential(g); grad_x = -grad_{r_j} = -(d/du) to_grid^T
        gradient = -_interpolated_gradient(geometry.weights, geometry.index, potential) @ g.T
        _, real = multipole_response_sum(geometry.shifts, -geometry.images, m0, m1, m2, self.alpha, self.real_cutoff)
        np.add.at(gradient, geometry.owners, real)
        return gradient


def _multi_index(*axes: int) -> tuple[int, int, int]:
    """Derivative counts per axis of the mixed derivative d/du_axes[0] d/du_axes[1] ..."""
    return (axes.count(0), axes.count(1), axes.count(2))
