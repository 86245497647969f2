import { describe, expect, it } from "vitest";
import { parseEvent } from "./training";

describe("server-sent events", () => {
  it("reads the event name, id and data of a block", () => {
    expect(parseEvent('event: progress\nid: 42\ndata: {"step": 3}')).toEqual({ event: "progress", id: "42", data: '{"step": 3}' });
    expect(parseEvent("data: a\ndata: b")).toEqual({ event: "message", id: null, data: "a\nb" });
  });
});
