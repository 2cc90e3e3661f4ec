// Intent journal for renames: new key records are written down before anything moves, so a crash loses nothing.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { BackingStore } from '../store/index.js';

export interface RenameIntent {
  version: 1;
  op: 'rename';
  from: { bucket: string; key: string };
  to: { bucket: string; key: string };
  /** One entry per regular file moved: path relative to the renamed entry ('' for a file), its new key record (base64). */
  entries: Array<{ rel: string; record: string; fileId?: string }>;
  /**
   * Set on an intent kept as `.failed`: the move was done at an earlier start. Whatever sits at
   * `from` now is another object, and each entry's `fileId` (hex, from the data file's header)
   * names the file its record belongs to: a file that replaced it since is left alone.
   */
  moved?: true;
}

export class RenameJournal {
  constructor(private readonly store: BackingStore) {}

  /** Durably records the intent; returns its id. Sealed key records may be stored anywhere, so this holds no secret. */
  async write(intent: RenameIntent): Promise<string> {
    const id = `rename-${Date.now()}-${randomBytes(6).toString('hex')}`;
    const tmp = this.store.tempPath('journal');
    const fh = await fsp.open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(JSON.stringify(intent));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path.join(this.store.journalDir, `${id}.json`));
    await this.store.fsyncDir(this.store.journalDir);
    return id;
  }

  /**
   * Keeps entries whose record could not be written at start-up under `ID.failed`; the next
   * start offers them again (as a pending intent whose move is done).
   */
  async keepFailed(id: string, intent: RenameIntent): Promise<void> {
    const p = path.join(this.store.journalDir, `${id}.failed`);
    await fsp.writeFile(p, JSON.stringify(intent), { mode: 0o600 });
    await this.store.fsyncDir(this.store.journalDir);
  }

  async remove(id: string): Promise<void> {
    await fsp.rm(path.join(this.store.journalDir, `${id}.json`), { force: true });
  }

  /** Intents left by a daemon that stopped in the middle, oldest first. */
  async pending(): Promise<Array<{ id: string; intent: RenameIntent }>> {
    const all = await fsp.readdir(this.store.journalDir);
    // Entries kept from an earlier start go first, back under .json: tried again like any intent.
    for (const n of all.filter((x) => x.endsWith('.failed'))) {
      const id = n.slice(0, -'.failed'.length);
      if (!all.includes(`${id}.json`)) await fsp.rename(path.join(this.store.journalDir, n), path.join(this.store.journalDir, `${id}.json`));
      else await fsp.rm(path.join(this.store.journalDir, n), { force: true });
    }
    const names = (await fsp.readdir(this.store.journalDir)).filter((n) => n.endsWith('.json')).sort();
    const out: Array<{ id: string; intent: RenameIntent }> = [];
    for (const n of names) {
      const text = await fsp.readFile(path.join(this.store.journalDir, n), 'utf8');
      out.push({ id: n.slice(0, -5), intent: JSON.parse(text) as RenameIntent });
    }
    return out;
  }
}
