/**
 * Hand-written SVG charts for `bench/load.ts` (no dependencies): small
 * multiples with logarithmic value axes.
 *
 * @module
 */

/** One point of a line series. */
export interface Point {
  /** Index of the x category. */
  x: number;
  y: number;
}

/** A line of a panel. */
export interface Series {
  label: string;
  color: string;
  dashed?: boolean;
  points: Point[];
}

/** A horizontal reference line or single markers of a panel. */
export interface Reference {
  label: string;
  color: string;
  y: number;
  /** Draw only a marker at this x category instead of a full-width line. */
  at?: number;
}

/** One panel of a line chart. */
export interface LinePanel {
  title: string;
  series: Series[];
  references?: Reference[];
}

/** One panel of a grouped bar chart. */
export interface BarPanel {
  title: string;
  groups: string[];
  /** bars[k][g]: value of bar kind k in group g (NaN: no bar). */
  bars: number[][];
}

interface LegendItem {
  label: string;
  color: string;
  dashed?: boolean;
  dotted?: boolean;
  shape?: string;
}

const W = 480;
const H = 320;
const M = { left: 64, right: 16, top: 34, bottom: 56 };
const FONT = 'font-family="system-ui, sans-serif"';

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function fmt(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toPrecision(3)}k`;
  return `${+v.toPrecision(3)}`;
}

/** Decade bounds that hold every finite positive value. */
function logRange(values: number[]): [number, number] {
  const vs = values.filter((v) => Number.isFinite(v) && v > 0);
  if (vs.length === 0) return [1, 10];
  // Leave at least half a decade under the smallest value so its bar shows.
  const lo = 10 ** Math.floor(Math.log10(Math.min(...vs) / 3));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...vs)));
  if (hi <= lo) hi = lo * 10;
  return [lo, hi];
}

function axisY(lo: number, hi: number, x0: number, y: (v: number) => number, x1: number): string {
  let out = "";
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi * 1.0001) break;
      const yy = y(v).toFixed(1);
      out += `<line x1="${x0}" x2="${x1}" y1="${yy}" y2="${yy}" stroke="#e4e4e4"/>`;
      out += `<text x="${x0 - 4}" y="${yy}" text-anchor="end" dominant-baseline="middle" ` +
        `font-size="10" fill="#555">${fmt(v)}</text>`;
    }
  }
  return out;
}

function frame(
  panels: string[],
  title: string,
  subtitle: string,
  legend: LegendItem[],
): string {
  const cols = 2;
  const rows = Math.ceil(panels.length / cols);
  const top = 56;
  const legendH = 22 * Math.ceil(legend.length / 4) + 8;
  const width = cols * W;
  const height = top + rows * H + legendH;
  let out = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" ${FONT}>`;
  out += `<rect width="100%" height="100%" fill="white"/>`;
  out += `<text x="12" y="22" font-size="16" font-weight="bold">${esc(title)}</text>`;
  out += `<text x="12" y="42" font-size="11" fill="#555">${esc(subtitle)}</text>`;
  panels.forEach((p, i) => {
    out += `<g transform="translate(${(i % cols) * W},${top + Math.floor(i / cols) * H})">${p}</g>`;
  });
  legend.forEach((l, i) => {
    const x = 12 + (i % 4) * (width / 4);
    const y = top + rows * H + 14 + Math.floor(i / 4) * 22;
    if (l.shape === "rect") {
      out += `<rect x="${x}" y="${y - 6}" width="18" height="12" fill="${l.color}"/>`;
    } else if (l.shape === "diamond") {
      out += `<path d="M${x + 9},${y - 6} l6,6 l-6,6 l-6,-6 z" fill="${l.color}"/>`;
    } else {
      out += `<line x1="${x}" x2="${x + 22}" y1="${y}" y2="${y}" stroke="${l.color}" ` +
        `stroke-width="2"${
          l.dotted ? ' stroke-dasharray="2,3"' : l.dashed ? ' stroke-dasharray="5,3"' : ""
        }/>`;
    }
    out += `<text x="${x + 28}" y="${y}" dominant-baseline="middle" font-size="11">` +
      `${esc(l.label)}</text>`;
  });
  return out + "</svg>\n";
}

/** Line chart panels over categorical x (e.g. concurrency), log-scaled y. */
export function lineChart(options: {
  title: string;
  subtitle: string;
  categories: string[];
  yLabel: string;
  panels: LinePanel[];
}): string {
  const { categories } = options;
  const legend = new Map<string, LegendItem>();
  const panels = options.panels.map((panel) => {
    const values = [
      ...panel.series.flatMap((s) => s.points.map((p) => p.y)),
      ...(panel.references ?? []).map((r) => r.y),
    ];
    const [lo, hi] = logRange(values);
    const x0 = M.left;
    const x1 = W - M.right;
    const y0 = H - M.bottom;
    const y1 = M.top;
    const y = (v: number) => y0 - (Math.log10(v / lo) / Math.log10(hi / lo)) * (y0 - y1);
    const step = (x1 - x0) / categories.length;
    const x = (i: number) => x0 + step * (i + 0.5);
    let out = `<text x="${W / 2}" y="20" text-anchor="middle" font-size="13" font-weight="bold">` +
      `${esc(panel.title)}</text>`;
    out += axisY(lo, hi, x0, y, x1);
    out += `<line x1="${x0}" x2="${x0}" y1="${y1}" y2="${y0}" stroke="#888"/>`;
    out += `<line x1="${x0}" x2="${x1}" y1="${y0}" y2="${y0}" stroke="#888"/>`;
    categories.forEach((c, i) => {
      out += `<text x="${x(i)}" y="${y0 + 16}" text-anchor="middle" font-size="10">${
        esc(c)
      }</text>`;
    });
    out += `<text x="14" y="${(y0 + y1) / 2}" transform="rotate(-90 14 ${(y0 + y1) / 2})" ` +
      `text-anchor="middle" font-size="11" fill="#333">${esc(options.yLabel)}</text>`;
    for (const r of panel.references ?? []) {
      if (!(r.y > 0)) continue;
      const yy = y(r.y).toFixed(1);
      if (r.at === undefined) {
        out += `<line x1="${x0}" x2="${x1}" y1="${yy}" y2="${yy}" stroke="${r.color}" ` +
          `stroke-width="1.5" stroke-dasharray="2,3"/>`;
        out += `<text x="${x1 - 2}" y="${+yy - 3}" text-anchor="end" font-size="9" ` +
          `fill="${r.color}">${fmt(r.y)}</text>`;
        legend.set(r.label, { label: r.label, color: r.color, dashed: true, dotted: true });
      } else {
        const xx = x(r.at);
        out += `<path d="M${xx},${+yy - 6} l6,6 l-6,6 l-6,-6 z" fill="${r.color}">` +
          `<title>${esc(r.label)}: ${fmt(r.y)}</title></path>`;
        out += `<text x="${xx + 8}" y="${+yy + 3}" font-size="9" fill="${r.color}">` +
          `${fmt(r.y)}</text>`;
        legend.set(r.label, { label: r.label, color: r.color, shape: "diamond" });
      }
    }
    for (const s of panel.series) {
      const pts = s.points.filter((p) => p.y > 0).sort((a, b) => a.x - b.x);
      if (pts.length === 0) continue;
      const d = pts.map((p, i) => `${i === 0 ? "M" : "L"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`)
        .join(" ");
      out += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"` +
        `${s.dashed ? ' stroke-dasharray="5,3"' : ""}/>`;
      for (const p of pts) {
        out += `<circle cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="3" ` +
          `fill="${s.color}"><title>${esc(s.label)} ${esc(categories[p.x])}: ${fmt(p.y)}</title>` +
          `</circle>`;
        if (!s.dashed) {
          out += `<text x="${(x(p.x) + 5).toFixed(1)}" y="${(y(p.y) - 5).toFixed(1)}" ` +
            `font-size="9" fill="${s.color}">${fmt(p.y)}</text>`;
        }
      }
      legend.set(s.label, { label: s.label, color: s.color, dashed: s.dashed });
    }
    return out;
  });
  return frame(panels, options.title, options.subtitle, [...legend.values()]);
}

/** Grouped bar chart panels, log-scaled y. */
export function barChart(options: {
  title: string;
  subtitle: string;
  kinds: { label: string; color: string }[];
  yLabel: string;
  panels: BarPanel[];
}): string {
  const panels = options.panels.map((panel) => {
    const [lo, hi] = logRange(panel.bars.flat());
    const x0 = M.left;
    const x1 = W - M.right;
    const y0 = H - M.bottom;
    const y1 = M.top;
    const y = (v: number) => y0 - (Math.log10(v / lo) / Math.log10(hi / lo)) * (y0 - y1);
    const groupW = (x1 - x0) / panel.groups.length;
    const barW = (groupW * 0.8) / options.kinds.length;
    let out = `<text x="${W / 2}" y="20" text-anchor="middle" font-size="13" font-weight="bold">` +
      `${esc(panel.title)}</text>`;
    out += axisY(lo, hi, x0, y, x1);
    out += `<line x1="${x0}" x2="${x0}" y1="${y1}" y2="${y0}" stroke="#888"/>`;
    out += `<line x1="${x0}" x2="${x1}" y1="${y0}" y2="${y0}" stroke="#888"/>`;
    out += `<text x="14" y="${(y0 + y1) / 2}" transform="rotate(-90 14 ${(y0 + y1) / 2})" ` +
      `text-anchor="middle" font-size="11" fill="#333">${esc(options.yLabel)}</text>`;
    panel.groups.forEach((g, gi) => {
      const gx = x0 + gi * groupW + groupW * 0.1;
      out += `<text x="${gx + groupW * 0.4}" y="${y0 + 16}" text-anchor="middle" font-size="10">` +
        `${esc(g)}</text>`;
      options.kinds.forEach((k, ki) => {
        const v = panel.bars[ki][gi];
        if (!(v > 0)) return;
        const top = Math.max(y1, y(v));
        out += `<rect x="${(gx + ki * barW).toFixed(1)}" y="${top.toFixed(1)}" ` +
          `width="${(barW - 1).toFixed(1)}" height="${(y0 - top).toFixed(1)}" fill="${k.color}">` +
          `<title>${esc(g)} ${esc(k.label)}: ${fmt(v)}</title></rect>`;
      });
    });
    return out;
  });
  return frame(
    panels,
    options.title,
    options.subtitle,
    options.kinds.map((k) => ({ ...k, shape: "rect" })),
  );
}
