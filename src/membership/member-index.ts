/**
 * Member ids to dense indexes, shared by every core in one process: the
 * discrete-event model holds 10,000 views of 10,000 members as typed arrays
 * instead of 10,000 maps.
 */
export class MemberIndex {
  private readonly byId = new Map<string, number>();
  private readonly ids: string[] = [];

  indexOf(id: string): number {
    let index = this.byId.get(id);
    if (index === undefined) {
      index = this.ids.length;
      this.byId.set(id, index);
      this.ids.push(id);
    }
    return index;
  }

  find(id: string): number | undefined {
    return this.byId.get(id);
  }

  idOf(index: number): string {
    const id = this.ids[index];
    if (id === undefined) throw new RangeError(`no member with index ${index}`);
    return id;
  }

  get size(): number {
    return this.ids.length;
  }
}
