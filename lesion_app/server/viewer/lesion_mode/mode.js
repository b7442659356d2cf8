/*
 * lesion_app's lesion mode for OHIF 3.13 (5 of 5): the mode (route `lesion`) and its extension (the command the
 * toolbar runs), put into `window.config` before OHIF starts. The mode is OHIF's segmentation mode with its own
 * toolbar, its own tool group (no window/level on the left button, no tool that fetches a model from elsewhere)
 * and the session of session.js; OHIF's files are not changed.
 */
(() => {
  const lesionApp = window.lesionApp;
  const EXTENSION_ID = "@lesion_app/extension-lesion";

  const extension = {
    id: EXTENSION_ID,
    version: "1.0.0",
    getCommandsModule: () => ({
      definitions: { lesionRun: { commandFn: ({ id }) => lesionApp.toolbar.run(id) } },
      defaultContext: "DEFAULT",
    }),
  };

  /** Zoom on the right button, pan on the middle one, the wheel scrolls; brush and eraser wait to be chosen. */
  function initToolGroups({ toolGroupService }) {
    const { MouseBindings } = window.cornerstoneTools.Enums;
    const brush = (name, strategy) => ({
      toolName: name,
      parentTool: "Brush",
      configuration: { activeStrategy: strategy, minRadius: 0.5, maxRadius: 200 },
    });
    toolGroupService.createToolGroupAndAddTools("default", {
      active: [
        { toolName: "Pan", bindings: [{ mouseButton: MouseBindings.Auxiliary }] },
        { toolName: "Zoom", bindings: [{ mouseButton: MouseBindings.Secondary }] },
        { toolName: "StackScroll", bindings: [{ mouseButton: MouseBindings.Wheel }] },
      ],
      passive: [brush("CircularBrush", "FILL_INSIDE_CIRCLE"), brush("CircularEraser", "ERASE_INSIDE_CIRCLE")],
    });
  }

  const mode = {
    id: "@lesion_app/mode-lesion",
    async modeFactory({ loadModules }) {
      const [segmentation] = await loadModules(["@ohif/mode-segmentation"]);
      const base = segmentation.modeInstance;
      const route = base.routes[0];
      const props = {
        ...route.layoutInstance.props,
        leftPanels: [],
        leftPanelClosed: true,
        rightPanels: [],
        rightPanelClosed: true,
      };
      return {
        ...base,
        id: "@lesion_app/mode-lesion",
        routeName: "lesion",
        displayName: "Lesion (lesion_app)",
        toolbarButtons: lesionApp.toolbar.buttons,
        toolbarSections: lesionApp.toolbar.sections,
        toolGroupAdditions: {},
        initToolGroups,
        activatePanelTriggers: [],
        onModeEnter(context) {
          base.onModeEnter.call(this, context);
          lesionApp.session.enter(context.servicesManager.services);
        },
        onModeExit(context) {
          lesionApp.session.exit();
          base.onModeExit.call(this, context);
        },
        routes: [{ ...route, layoutInstance: { ...route.layoutInstance, props } }],
        // the extension is registered from window.config.extensions: a name here would be imported as a module
        hangingProtocol: "default",
      };
    },
  };

  window.config.extensions.push(extension);
  window.config.modes.push(mode);
})();
