// A compact list of file-backed items. ImageNet-21k has ~13M images; as JS objects their paths
// alone would take over 1 GB, so names live in one byte buffer and the rest in typed arrays
// (~30 bytes an item): memory grows with the number of items, never with image data.
import type { Item, LoadedItems } from './types.ts';

class GrowableInt32 {
  data = new Int32Array(1024);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = new Int32Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
}

class GrowableFloat64 {
  data = new Float64Array(1024);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
}

export class FileCatalog {
  /** Folders or tar files that item names are relative to. */
  readonly containers: string[] = [];
  private readonly labels = new GrowableInt32();
  private readonly containerOf = new GrowableInt32();
  private readonly offsets = new GrowableFloat64();
  private readonly sizes = new GrowableFloat64();
  private readonly nameEnds = new GrowableFloat64();
  private nameBytes = Buffer.alloc(1 << 16);
  private nameLength = 0;

  get count(): number {
    return this.labels.length;
  }

  addContainer(path: string): number {
    this.containers.push(path);
    return this.containers.length - 1;
  }

  /** A file `name` inside folder `container`. */
  addFile(container: number, name: string, label: number): void {
    this.add(container, name, label, -1, -1);
  }

  /** A member `name` of tar file `container`, its data at `offset`. */
  addMember(container: number, name: string, label: number, offset: number, size: number): void {
    this.add(container, name, label, offset, size);
  }

  private add(container: number, name: string, label: number, offset: number, size: number): void {
    const needed = Buffer.byteLength(name);
    if (this.nameLength + needed > this.nameBytes.length) {
      const next = Buffer.alloc(Math.max(this.nameBytes.length * 2, this.nameLength + needed));
      this.nameBytes.copy(next, 0, 0, this.nameLength);
      this.nameBytes = next;
    }
    this.nameLength += this.nameBytes.write(name, this.nameLength);
    this.nameEnds.push(this.nameLength);
    this.labels.push(label);
    this.containerOf.push(container);
    this.offsets.push(offset);
    this.sizes.push(size);
  }

  name(i: number): string {
    const start = i === 0 ? 0 : this.nameEnds.data[i - 1]!;
    return this.nameBytes.toString('utf8', start, this.nameEnds.data[i]!);
  }

  label(i: number): number {
    return this.labels.data[i]!;
  }

  item(i: number): Item {
    const container = this.containers[this.containerOf.data[i]!]!;
    const name = this.name(i);
    const offset = this.offsets.data[i]!;
    if (offset < 0) {
      const path = `${container}/${name}`;
      return { label: this.label(i), name: path, ref: { kind: 'file', path } };
    }
    return {
      label: this.label(i),
      name: `${container}#${name}`,
      ref: { kind: 'range', path: container, offset, size: this.sizes.data[i]! },
    };
  }

  load(indices: ArrayLike<number>): Promise<LoadedItems> {
    const items: Item[] = [];
    for (let k = 0; k < indices.length; k++) items.push(this.item(indices[k]!));
    return Promise.resolve({ items });
  }
}
