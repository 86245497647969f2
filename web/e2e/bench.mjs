// The console's timings in Chromium, for bench/console.py (which starts Kiln, seeds the data
// and passes it in the environment). Prints one JSON object.
import { chromium } from "playwright-core";

const URL = process.env.KILN_URL;
const seed = JSON.parse(process.env.BENCH_SEED);
const runs = Number(process.env.BENCH_RUNS ?? "5");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });

async function signedIn(token) {
  // A cold cache every time: a new context has none; the session is put in place up front.
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript((t) => {
    const part = t.split(".")[1];
    const claims = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
    sessionStorage.setItem("kiln.session", JSON.stringify({ token: t, subject: claims.sub, roles: claims.roles }));
  }, token);
  return { context, page: await context.newPage() };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p99 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.99) - 1)];

// Datasets page to interactive: the list is drawn and its links can be clicked.
const firstLoad = [];
for (let i = 0; i < runs; i += 1) {
  const { context, page } = await signedIn(seed.admin);
  const started = Date.now();
  await page.goto(`${URL}/datasets`);
  await page.getByRole("link", { name: seed.large_dataset, exact: true }).waitFor();
  firstLoad.push(Date.now() - started);
  await context.close();
}

// Labelling page with a 4000×3000 image: from navigation to the task's image drawn.
const ready = [];
for (let i = 0; i < runs; i += 1) {
  const { context, page } = await signedIn(seed.large_annotators[i]);
  const started = Date.now();
  await page.goto(`${URL}/labelling/${seed.large_project}`);
  await page.getByRole("button", { name: "Next task" }).click();
  await page.getByText(/image ready/).waitFor({ timeout: 60_000 });
  ready.push(Date.now() - started);
  await context.close();
}

// Submit to the next task drawn, over many tasks in one session. Timed in the page: from the
// click event to the paint of the first frame after the next task's image is in (what the annotator waits
// for). The harness's own clock, which adds Playwright's click (actionability checks, a few
// DevTools round trips) and its polling, is reported beside it.
const submits = [];
const harness = [];
{
  const { context, page } = await signedIn(seed.loop_annotator);
  await page.goto(`${URL}/labelling/${seed.loop_project}`);
  await page.getByRole("button", { name: "Next task" }).click();
  await page.getByText(/image ready/).waitFor();
  await page.evaluate(() => {
    const timings = (window.__submitTimings = []);
    const name = () => document.querySelector("[data-testid=item-name]")?.textContent ?? "";
    let pending = null;
    document.addEventListener(
      "click",
      (e) => {
        if (e.target instanceof Element && e.target.closest("[data-testid=submit]")) {
          pending = { at: performance.now(), before: name() };
        }
      },
      true,
    );
    new MutationObserver(() => {
      const now = name();
      if (pending && now !== pending.before && now.includes("image ready")) {
        const at = pending.at;
        pending = null;
        // After that frame is painted: a task after its next animation frame.
        requestAnimationFrame(() => setTimeout(() => timings.push(performance.now() - at), 0));
      }
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  for (let i = 0; i < seed.loop_tasks; i += 1) {
    const started = Date.now();
    await page.getByTestId("submit").click();
    await page.waitForFunction((n) => window.__submitTimings.length > n, i, { polling: "raf" });
    harness.push(Date.now() - started);
  }
  submits.push(...(await page.evaluate(() => window.__submitTimings.map(Math.round))));
  await context.close();
}
await browser.close();
console.log(
  JSON.stringify({
    first_load_ms: median(firstLoad),
    labelling_ready_ms: median(ready),
    submit_to_next_p99_ms: p99(submits),
    submit_to_next_p50_ms: median(submits),
    submit_to_next_harness_p99_ms: p99(harness),
    submit_to_next_harness_p50_ms: median(harness),
    samples: { first_load_ms: firstLoad, labelling_ready_ms: ready, submits: submits.length },
  }),
);
