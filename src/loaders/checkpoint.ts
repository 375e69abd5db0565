// A safetensors checkpoint over byte sources: one file, or shards named by
// model.safetensors.index.json. Headers are read on demand (8 bytes, then the header), tensors by
// ranged reads of just their bytes (neighbouring tensors of one file in one read when the gap
// between them is small), so one layer of a large checkpoint costs its own bytes.
import {
  decodeTensor,
  parseSafetensorsHeader,
  parseSafetensorsIndex,
  safetensorsHeaderLength,
  type SafetensorsEntry,
  type SafetensorsHeader,
  type SafetensorsTensor,
} from "../safetensors.ts";
import { loadError } from "./errors.ts";
import { checkAborted, openSource, readWhole, type ByteSource, type FileValue, type LoadProgress, type SourceOptions } from "./sources.ts";

export const INDEX_FILE = "model.safetensors.index.json";
/** Tensors of one file closer than this are fetched in one read (fewer requests, little waste). */
const COALESCE_GAP = 1 << 16;

export interface CheckpointOptions {
  signal?: AbortSignal;
  onProgress?: (progress: LoadProgress) => void;
  onNote?: (note: string) => void;
  fetch?: typeof fetch;
}

export interface TensorInfo {
  file: string;
  entry: SafetensorsEntry;
}

export interface Checkpoint {
  /** The files the tensor names live in; for one safetensors file, that file. */
  readonly files: string[];
  /** Where a tensor lives and its dtype/shape (reads that file's header when needed); undefined when absent. */
  info(name: string): Promise<TensorInfo | undefined>;
  /** Every tensor name (reads every header of an unsharded set of files; from the index when sharded). */
  names(): Promise<string[]>;
  /** Reads and decodes the named tensors (F16/BF16 widened); throws MISSING_WEIGHT for an absent one. */
  read(names: string[]): Promise<Map<string, SafetensorsTensor>>;
  /** Bytes read so far (headers and tensors). */
  readonly loadedBytes: number;
  close(): Promise<void>;
}

/**
 * Opens a checkpoint: `files` maps file names to byte sources. With an index file, the shards it
 * names must all be present; without one, every *.safetensors file is part of the checkpoint.
 */
export async function openCheckpoint(files: Record<string, FileValue> | Map<string, FileValue>, options: CheckpointOptions = {}): Promise<Checkpoint> {
  const given = files instanceof Map ? new Map(files) : new Map(Object.keys(files).map((k) => [k, files[k]] as const));
  let loaded = 0;
  let total = 0;
  const sourceOptions: SourceOptions = {
    signal: options.signal,
    onNote: options.onNote,
    fetch: options.fetch,
    onBytes: (file, bytes) => {
      loaded += bytes;
      if (loaded > total) total = loaded;
      options.onProgress?.({ loadedBytes: loaded, totalBytes: total, file });
    },
  };
  const sources = new Map<string, ByteSource>();
  const source = (file: string): ByteSource => {
    let s = sources.get(file);
    if (!s) {
      if (!given.has(file))
        throw loadError("MISSING_FILE", `the checkpoint needs ${file}, which is not in files (given: ${[...given.keys()].join(", ") || "none"})`);
      s = openSource(file, given.get(file)!, sourceOptions);
      sources.set(file, s);
    }
    return s;
  };

  let weightMap: Map<string, string> | undefined;
  let shardFiles: string[];
  if (given.has(INDEX_FILE)) {
    const indexSource = source(INDEX_FILE);
    const index = await readWhole(indexSource)
      .then(parseSafetensorsIndex)
      .finally(() => indexSource.close()); // read whole: its file handle is not needed again
    weightMap = index.weightMap;
    shardFiles = [...new Set(weightMap.values())];
    const missing = shardFiles.filter((f) => !given.has(f));
    if (missing.length) throw loadError("MISSING_FILE", `${INDEX_FILE} names shards that are not in files: ${missing.join(", ")}`);
  } else {
    shardFiles = [...given.keys()].filter((f) => f.endsWith(".safetensors"));
    if (shardFiles.length === 0) {
      throw loadError("MISSING_FILE", `files holds no *.safetensors file and no ${INDEX_FILE} (given: ${[...given.keys()].join(", ") || "none"})`);
    }
  }

  const headers = new Map<string, Promise<SafetensorsHeader>>();
  const header = (file: string): Promise<SafetensorsHeader> => {
    let h = headers.get(file);
    if (!h) {
      h = (async () => {
        const s = source(file);
        const size = await s.size();
        total += 8;
        const n = safetensorsHeaderLength(await s.read(0, Math.min(8, size)), size);
        total += n;
        return parseSafetensorsHeader(await s.read(8, 8 + n), size - 8 - n);
      })();
      headers.set(file, h);
    }
    return h;
  };
  const inFile = async (name: string, file: string): Promise<TensorInfo | undefined> => {
    const entry = (await header(file)).entries.get(name);
    return entry && { file, entry };
  };

  const info = async (name: string): Promise<TensorInfo | undefined> => {
    checkAborted(options.signal, "loading the checkpoint");
    if (weightMap) {
      const file = weightMap.get(name);
      if (file === undefined) return undefined;
      const found = await inFile(name, file);
      if (!found) throw loadError("MISSING_WEIGHT", `${INDEX_FILE} places tensor ${name} in ${file}, whose header does not list it`);
      return found;
    }
    for (const file of shardFiles) {
      const found = await inFile(name, file);
      if (found) return found;
    }
    return undefined;
  };

  return {
    files: shardFiles,
    info,
    get loadedBytes() {
      return loaded;
    },
    async names() {
      if (weightMap) return [...weightMap.keys()];
      const all: string[] = [];
      for (const file of shardFiles) all.push(...(await header(file)).entries.keys());
      return all;
    },
    async read(names) {
      const infos: TensorInfo[] = [];
      for (const name of names) {
        const found = await info(name);
        if (!found) throw loadError("MISSING_WEIGHT", `the checkpoint has no tensor ${name}`);
        infos.push(found);
      }
      total += infos.reduce((sum, i) => sum + (i.entry.end - i.entry.begin), 0);
      const byFile = new Map<string, TensorInfo[]>();
      for (const i of infos) byFile.set(i.file, [...(byFile.get(i.file) ?? []), i]);
      const out = new Map<string, SafetensorsTensor>();
      for (const [file, list] of byFile) {
        const h = await header(file);
        const s = source(file);
        list.sort((a, b) => a.entry.begin - b.entry.begin);
        for (let i = 0; i < list.length; ) {
          let j = i + 1;
          let end = list[i].entry.end;
          while (j < list.length && list[j].entry.begin - end <= COALESCE_GAP) end = Math.max(end, list[j++].entry.end);
          const begin = list[i].entry.begin;
          total += end - begin - list.slice(i, j).reduce((sum, t) => sum + (t.entry.end - t.entry.begin), 0);
          const bytes = await s.read(h.dataStart + begin, h.dataStart + end);
          for (const t of list.slice(i, j)) out.set(t.entry.name, decodeTensor(t.entry, bytes.subarray(t.entry.begin - begin, t.entry.end - begin)));
          i = j;
        }
      }
      return out;
    },
    async close() {
      await Promise.all([...sources.values()].map((s) => s.close()));
    },
  };
}
