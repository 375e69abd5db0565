// `import source from "../../shaders/x.wgsl"`: scripts/build.mjs (esbuild's text loader) inlines
// the shader's text.
declare module "*.wgsl" {
  const source: string;
  export default source;
}
