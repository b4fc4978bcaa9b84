// Fade a result toward its content photo in CIE Lab, as photostyle.colour.blend_lab does on the server:
// L* = L*c + lightness (L*r - L*c), and a*, b* likewise with chroma. The same sRGB <-> Lab
// conversion as kornia (sRGB, D65 white 0.95047 / 1 / 1.08883), so the page shows what the
// download will hold.
"use strict";

const Lab = (() => {
  const WHITE = [0.95047, 1.0, 1.08883];
  const TO_LINEAR = new Float32Array(256);
  for (let i = 0; i < 256; i++) {
    const v = i / 255;
    TO_LINEAR[i] = v > 0.04045 ? ((v + 0.055) / 1.055) ** 2.4 : v / 12.92;
  }
  const STEPS = 16384; // linear -> sRGB byte by table: within 0.2/255 of the exact curve
  const TO_SRGB = new Uint8ClampedArray(STEPS + 1);
  for (let i = 0; i <= STEPS; i++) {
    const x = i / STEPS;
    const v = x > 0.0031308 ? 1.055 * x ** (1 / 2.4) - 0.055 : 12.92 * x;
    TO_SRGB[i] = Math.round(v * 255);
  }
  const f = (t) => (t > 0.008856 ? Math.cbrt(t) : 7.787 * t + 4 / 29);
  const finv = (t) => (t > 0.2068966 ? t * t * t : (t - 4 / 29) / 7.787);

  function toLab(data, i, out, o) {
    const r = TO_LINEAR[data[i]], g = TO_LINEAR[data[i + 1]], b = TO_LINEAR[data[i + 2]];
    const x = f((0.412453 * r + 0.35758 * g + 0.180423 * b) / WHITE[0]);
    const y = f(0.212671 * r + 0.71516 * g + 0.072169 * b);
    const z = f((0.019334 * r + 0.119193 * g + 0.950227 * b) / WHITE[2]);
    out[o] = 116 * y - 16;
    out[o + 1] = 500 * (x - y);
    out[o + 2] = 200 * (y - z);
  }

  function byte(linear) {
    if (!(linear > 0)) return 0;
    if (linear >= 1) return 255;
    return TO_SRGB[Math.round(linear * STEPS)];
  }

  /** Lab of the content and the change to the result, per pixel: [L, a, b, dL, da, db] * n. */
  function prepare(content, result, n) {
    const lab = new Float32Array(6 * n);
    const tmp = new Float32Array(3);
    for (let p = 0; p < n; p++) {
      toLab(content, 4 * p, lab, 6 * p);
      toLab(result, 4 * p, tmp, 0);
      lab[6 * p + 3] = tmp[0] - lab[6 * p];
      lab[6 * p + 4] = tmp[1] - lab[6 * p + 1];
      lab[6 * p + 5] = tmp[2] - lab[6 * p + 2];
    }
    return lab;
  }

  /** Write the faded image into ``out`` (RGBA bytes, alpha left as it is). */
  function render(lab, out, n, lightness, chroma) {
    for (let p = 0; p < n; p++) {
      const q = 6 * p;
      const L = lab[q] + lightness * lab[q + 3];
      const a = lab[q + 1] + chroma * lab[q + 4];
      const bb = lab[q + 2] + chroma * lab[q + 5];
      const fy = (L + 16) / 116;
      const fx = a / 500 + fy;
      const fz = Math.max(fy - bb / 200, 0);
      const x = finv(fx) * WHITE[0], y = finv(fy), z = finv(fz) * WHITE[2];
      const o = 4 * p;
      out[o] = byte(3.2404813432005266 * x - 1.5371515162713185 * y - 0.4985363261688878 * z);
      out[o + 1] = byte(-0.9692549499965682 * x + 1.8759900014898907 * y + 0.0415559265582928 * z);
      out[o + 2] = byte(0.0556466391351772 * x - 0.2040413383665112 * y + 1.0573110696453443 * z);
    }
  }

  return { prepare, render };
})();
