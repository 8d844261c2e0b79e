// Generated from herald's Rust types (src/sidecar/protocol.rs) by
// herald::sidecar::schema; do not edit. See docs/notifications.md.

/**
 * An event from the server: always `{"type": ..., "data": ...}`.
 */
export type ServerEvent =
  /**
   * A notification: a `send_notification` group event's `data` as it
   * came, or a missed row on resume.
   */
  | {
    type: "notification";
    data: NotificationPayload;
  }
  /**
   * A `chat_message` group event's `data`, unchanged.
   */
  | {
    type: "chat_message";
    data: unknown;
  }
  /**
   * A `typing` group event's `data` (user info and `is_typing`), unchanged.
   */
  | {
    type: "typing";
    data: unknown;
  }
  /**
   * A client message the server could not do; the socket stays open.
   */
  | {
    type: "error";
    data: ErrorData;
  }
  /**
   * The answer to `ping`.
   */
  | {
    type: "pong";
    data: Empty;
  }
  /**
   * The end of a replay (`?last_id=` or `resume`).
   */
  | {
    type: "resumed";
    data: Resumed;
  }
  /**
   * The answer to `refresh`.
   */
  | {
    type: "refreshed";
    data: Refreshed;
  }
  /**
   * The answer to `mark_read` and `mark_all_read`.
   */
  | {
    type: "marked_read";
    data: MarkedRead;
  };

/**
 * What `send_notification_ws` carries under `data`, and what the browser
 * receives under `{"type": "notification", "data": ...}`.
 */
export type NotificationPayload = {
  id: number;
  title: string;
  message: string;
  notification_type: string;
  is_read: boolean;
  created_at: string;
  /**
   * Extra routing data (`{"task_id": 42}`), `null` when the row has none.
   */
  data: unknown;
};

/**
 * `data` of an `error` event.
 */
export type ErrorData = {
  /**
   * Human-friendly text.
   */
  message: string;
};

/**
 * An empty `data` object.
 */
export type Empty = Record<string, never>;

/**
 * `data` of a `resumed` event.
 */
export type Resumed = {
  /**
   * Notifications sent by this replay (rows already sent are skipped).
   */
  count: number;
  /**
   * The last row read, or the requested id when none was read: resume
   * from here when `more` is true.
   */
  last_id: number;
  /**
   * True when the replay stopped at `replay_limit` rows.
   */
  more: boolean;
  /**
   * True when everything after the client's position is in this replay
   * and the pages `more` announces; false when herald cannot vouch for
   * it (the position's row is not the user's: deleted, or never theirs,
   * so rows committed late below it cannot be bounded; or more rows
   * than one replay reads were created within `resume_lookback` below
   * it): refetch.
   */
  recovered: boolean;
  /**
   * True when the server started this replay itself: the channel layer
   * may have dropped live notifications (Redis reconnected, a full
   * buffer), so they are read from the database.
   */
  resync: boolean;
};

/**
 * `data` of a `refreshed` event.
 */
export type Refreshed = {
  /**
   * The connection's new expiry, epoch seconds.
   */
  exp: number;
};

/**
 * `data` of a `marked_read` event.
 */
export type MarkedRead = {
  /**
   * The id asked for; null for `mark_all_read`.
   */
  id: number | null;
  /**
   * Rows changed (0 for an id that is not this user's or already read).
   */
  updated: number;
  /**
   * The user's unread notifications now.
   */
  unread_count: number;
};

/**
 * A message from the client, a JSON object whose `type` picks the variant.
 */
export type ClientMessage =
  /**
   * `{"type": "ping"}`, answered `{"type": "pong", "data": {}}`.
   */
  | {
    type: "ping";
  }
  /**
   * `{"type": "resume", "last_id": N}`: the notifications after N.
   */
  | {
    type: "resume";
    last_id: number;
  }
  /**
   * `{"type": "refresh", "token": "..."}`: a fresh access token for the
   * same user, which moves the connection's expiry.
   */
  | {
    type: "refresh";
    token: string;
  }
  /**
   * `{"type": "mark_read", "id": N}`.
   */
  | {
    type: "mark_read";
    id: number;
  }
  /**
   * `{"type": "mark_all_read"}`.
   */
  | {
    type: "mark_all_read";
  };
