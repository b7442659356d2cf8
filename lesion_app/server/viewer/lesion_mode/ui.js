/*
 * lesion_app's lesion mode for OHIF 3.13 (3 of 5): what the clinician sees and presses. The toolbar's buttons
 * (OHIF renders each id as `data-cy`), their keyboard shortcuts, and a panel over the viewport with the
 * proposal's predicted IoU and review mark, the annotator, the tool and what happened last.
 */
(() => {
  const lesionApp = window.lesionApp;
  const session = () => lesionApp.session;

  /** The buttons: id, label, icon, shortcut (shown in the tooltip), what it does; a tool toggles on and off. */
  const BUTTONS = [
    { id: "lesion-segment", label: "Segment", icon: "icon-tool-click-segment", key: "A",
      what: "runs the automatic model on the photograph", action: () => session().segment() },
    { id: "lesion-add", label: "Add (click)", icon: "tool-point", key: "Q",
      what: "each click adds the lesion there", tool: "add" },
    { id: "lesion-remove", label: "Remove (click)", icon: "tool-probe", key: "W",
      what: "each click removes what is there", tool: "remove" },
    { id: "lesion-brush", label: "Brush", icon: "icon-tool-brush", key: "B",
      what: "paints the lesion; [ and ] change the radius (pixels)", tool: "brush" },
    { id: "lesion-eraser", label: "Eraser", icon: "icon-tool-eraser", key: "E",
      what: "erases; [ and ] change the radius (pixels)", tool: "eraser" },
    { id: "lesion-undo", label: "Undo", icon: "tool-reset", key: "Ctrl+Z",
      what: "takes the last change back", action: () => session().undo() },
    { id: "lesion-no-lesion", label: "No lesion", icon: "tool-circle", key: "N",
      what: "saves the photograph as having no lesion", action: () => session().noLesion() },
    { id: "lesion-save", label: "Save", icon: "tool-capture", key: "Ctrl+S",
      what: "saves the mask as the photograph's label", action: () => session().save() },
    { id: "lesion-save-next", label: "Save and next", icon: "next-arrow", key: "Ctrl+Enter",
      what: "saves, then opens your next photograph", action: () => session().saveNext() },
    { id: "lesion-skip", label: "Skip", icon: "prev-arrow", key: "K",
      what: "opens your next photograph without saving", action: () => session().skip() },
  ]; // biome-ignore format: a table

  function run(id) {
    const button = BUTTONS.find((b) => b.id === id);
    if (button.tool) session().setTool(session().tool === button.tool ? null : button.tool);
    else button.action();
  }

  const buttons = BUTTONS.map(({ id, label, icon, key, what, tool }) => ({
    id,
    uiType: "ohif.toolButton",
    props: {
      icon,
      label,
      tooltip: `${label} (${key}): ${what}`,
      commands: [{ commandName: "lesionRun", commandOptions: { id } }],
      evaluate: () => ({ disabled: false, isActive: Boolean(tool) && session().tool === tool }),
    },
  }));

  lesionApp.toolbar = {
    ids: BUTTONS.map((b) => b.id),
    buttons,
    sections: { primary: BUTTONS.map((b) => b.id) },
    run,
  };

  // -- keys -------------------------------------------------------------------------------------------------

  const KEYS = {
    a: "lesion-segment",
    q: "lesion-add",
    w: "lesion-remove",
    b: "lesion-brush",
    e: "lesion-eraser",
    n: "lesion-no-lesion",
    k: "lesion-skip",
    "ctrl+z": "lesion-undo",
    "ctrl+s": "lesion-save",
    "ctrl+enter": "lesion-save-next",
  };

  function onKey(event) {
    const target = event.target;
    if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
    const key = `${event.ctrlKey || event.metaKey ? "ctrl+" : ""}${event.key.toLowerCase()}`;
    if (key === "[" || key === "]") {
      session().setRadius(session().radius + (key === "]" ? 2 : -2));
    } else if (KEYS[key]) {
      run(KEYS[key]);
    } else {
      return;
    }
    event.preventDefault();
    event.stopImmediatePropagation(); // before OHIF's own shortcuts
  }

  lesionApp.keys = {
    mount: () => window.addEventListener("keydown", onKey, true),
    unmount: () => window.removeEventListener("keydown", onKey, true),
  };

  // -- the panel over the viewport --------------------------------------------------------------------------

  const TOOL_NAMES = { add: "Add clicks", remove: "Remove clicks", brush: "Brush", eraser: "Eraser" };
  let panel = null;
  let lastStatus = "";

  function line(name, text) {
    const row = document.createElement("div");
    row.dataset.cy = name;
    row.textContent = text;
    return row;
  }

  function update() {
    if (!panel) return;
    const s = session();
    const info = s.info || {};
    const iou = typeof info.predicted_iou === "number" ? info.predicted_iou.toFixed(2) : "-";
    const review = info.review ? " · review" : "";
    const who = info.auth_user || lesionApp.api.annotator() || "nobody (give your name in the worklist)";
    let pixels = 0;
    if (s.ready) for (const v of s.currentMask()) pixels += v;
    const tool = TOOL_NAMES[s.tool] || "no tool";
    const radius = s.tool === "brush" || s.tool === "eraser" ? ` · radius ${s.radius} px` : "";
    panel.replaceChildren(
      line("lesion-quality", `predicted IoU ${iou}${review}`),
      line("lesion-state", `${info.state || ""}${info.annotator ? ` by ${info.annotator}` : ""}`),
      line("lesion-annotator", `annotator: ${who}`),
      line("lesion-tool", `${tool}${radius}${s.busy ? " · working…" : ""}`),
      line("lesion-size", size(s.measurements, pixels)),
      line("lesion-status", lastStatus),
    );
  }

  /** Area and longest (Feret) diameter from the server's measurements of the mask shown, mm where calibrated. */
  function size(m, pixels) {
    const mm = (value, unit) => (typeof value === "number" ? ` (${value.toFixed(1)} ${unit})` : "");
    if (!m) return `area ${pixels} px · longest diameter after the next click or Segment`;
    if (!m.area_px) return "area 0 px: no lesion";
    const diameter = `${Math.round(m.feret_max_px)} px${mm(m.feret_max_mm, "mm")}`;
    return `area ${m.area_px} px${mm(m.area_mm2, "mm²")} · longest diameter ${diameter}`;
  }

  function status(message) {
    lastStatus = message;
    update();
  }

  /** No orientation letters (a photograph has none) and no window/level text over the photograph. */
  const HIDDEN = ".ViewportOrientationMarkers, .viewport-overlay.overlay-bottom { display: none !important; }";
  let style = null;

  lesionApp.overlay = {
    mount() {
      style = document.createElement("style");
      style.textContent = HIDDEN;
      document.head.appendChild(style);
      panel = document.createElement("div");
      panel.dataset.cy = "lesion-panel";
      panel.style.cssText =
        "position:fixed;left:16px;bottom:16px;z-index:1000;padding:8px 12px;border-radius:6px;" +
        "background:rgba(0,0,0,.72);color:#fff;font:13px/1.5 system-ui,sans-serif;pointer-events:none;max-width:420px";
      document.body.appendChild(panel);
      lastStatus = "";
      update();
    },
    unmount() {
      panel?.remove();
      style?.remove();
      panel = null;
      style = null;
    },
    update,
    status,
  };
})();
