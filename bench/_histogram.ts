/**
 * A mergeable latency histogram with logarithmic buckets (1% wide, from
 * 1 µs), so workers can report compact results that the load generator adds
 * up before taking percentiles.
 *
 * @module
 */

const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
/** Buckets up to ~1000 s. */
const BUCKETS = Math.ceil(Math.log(1e9) / LOG_GROWTH) + 1;

/** Sparse serialized form: `[bucket, count]` pairs plus exact sum, min, max. */
export interface HistogramData {
  buckets: [number, number][];
  count: number;
  sumUs: number;
  minUs: number;
  maxUs: number;
}

/** Latency histogram in microseconds. */
export class Histogram {
  readonly #counts = new Float64Array(BUCKETS);
  count = 0;
  sumUs = 0;
  minUs = Infinity;
  maxUs = 0;

  /** Records one latency given in milliseconds. */
  recordMs(ms: number): void {
    const us = ms * 1000;
    const i = us <= 1 ? 0 : Math.min(BUCKETS - 1, Math.floor(Math.log(us) / LOG_GROWTH));
    this.#counts[i]++;
    this.count++;
    this.sumUs += us;
    if (us < this.minUs) this.minUs = us;
    if (us > this.maxUs) this.maxUs = us;
  }

  /** Adds another histogram's data into this one. */
  merge(data: HistogramData): void {
    for (const [i, c] of data.buckets) this.#counts[i] += c;
    this.count += data.count;
    this.sumUs += data.sumUs;
    if (data.count > 0) {
      this.minUs = Math.min(this.minUs, data.minUs);
      this.maxUs = Math.max(this.maxUs, data.maxUs);
    }
  }

  /** The `p`-th percentile (0..100) in µs, within 1%; NaN when empty. */
  percentile(p: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i];
      if (seen >= rank) {
        const mid = i === 0 ? 1 : Math.exp((i + 0.5) * LOG_GROWTH);
        return Math.min(this.maxUs, Math.max(this.minUs, mid));
      }
    }
    return this.maxUs;
  }

  /** Mean in µs. */
  get meanUs(): number {
    return this.count === 0 ? NaN : this.sumUs / this.count;
  }

  /** Serializes the non-empty buckets. */
  toJSON(): HistogramData {
    const buckets: [number, number][] = [];
    for (let i = 0; i < BUCKETS; i++) if (this.#counts[i] > 0) buckets.push([i, this.#counts[i]]);
    return {
      buckets,
      count: this.count,
      sumUs: this.sumUs,
      minUs: this.count === 0 ? 0 : this.minUs,
      maxUs: this.maxUs,
    };
  }
}
