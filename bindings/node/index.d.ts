// Types of cluster-session-store's Node package (index.js).
import type { Store, SessionData } from 'express-session';

declare namespace clusterSessionStore {
  /** setup()'s options; every one optional. */
  interface SetupOptions {
    /** Size of the shared segment in bytes, fixed for the life of the primary (default 64 MiB). */
    memorySize?: number;
    /** Number of shards, a power of two (default 64). */
    shards?: number;
    /** Largest session accepted, in bytes of JSON (default 64 KiB). */
    maxValueSize?: number;
    /** Seconds a session lives when its cookie has no expiry (default 86400). */
    ttl?: number;
    /** Longest wait in ms for a shard lock held by a live process (default 5000). */
    lockTimeout?: number;
    /** A full shard evicts the least recently used sessions ('lru', default) or refuses new ones. */
    eviction?: 'lru' | 'refuse';
    /** How often in ms the primary frees expired sessions (default 1000). */
    sweepInterval?: number;
  }

  /** What checkIntegrity() found. */
  interface Integrity {
    ok: boolean;
    shardsChecked: number;
    records: number;
    problems: string[];
  }

  /** The store's counters, summed over its shards. */
  interface Stats {
    records: number;
    usedBytes: number;
    hits: number;
    misses: number;
    sets: number;
    destroys: number;
    evictions: number;
    expirations: number;
    recoveries: number;
    corruptDropped: number;
    sweeps: number;
  }

  /** An Error from the store, with a code such as 'ERR_CLUSTER_STORE_VALUE_TOO_LARGE'. */
  interface StoreError extends Error {
    code: string;
  }

  type Callback<T = void> = (err: StoreError | null, value?: T) => void;

  interface ClusterStore extends Store {
    get(sid: string, cb: Callback<SessionData | undefined>): void;
    get(sid: string): Promise<SessionData | undefined>;
    set(sid: string, session: SessionData, cb: Callback): void;
    set(sid: string, session: SessionData): Promise<void>;
    destroy(sid: string, cb: Callback): void;
    destroy(sid: string): Promise<void>;
    touch(sid: string, session: SessionData, cb: Callback): void;
    touch(sid: string, session: SessionData): Promise<void>;
    all(cb: Callback<Record<string, SessionData>>): void;
    all(): Promise<Record<string, SessionData>>;
    length(cb: Callback<number>): void;
    length(): Promise<number>;
    clear(cb: Callback): void;
    clear(): Promise<void>;
    checkIntegrity(): Integrity;
    stats(): Stats;
    primaryAlive(): boolean;
  }

  interface ClusterStoreClass {
    /** Attaches to the store the cluster primary set up; throws ERR_CLUSTER_STORE_NOT_SET_UP if none. */
    new (options?: object): ClusterStore;
    setup(options?: SetupOptions): void;
    shutdown(): boolean;
  }
}

/** The store class for this express-session module: require('cluster-session-store')(session). */
declare function clusterSessionStore(session: { Store: typeof Store }): clusterSessionStore.ClusterStoreClass;

declare namespace clusterSessionStore {
  /** In the cluster primary, before cluster.fork(): creates the store. Does nothing in a worker. */
  function setup(options?: SetupOptions): void;
  /** Removes the primary's store now (done at exit and on SIGINT/SIGTERM anyway). */
  function shutdown(): boolean;
  /** The environment variable through which workers find the store. */
  const ENV_NAME: 'CLUSTER_SESSION_STORE';
}

export = clusterSessionStore;
