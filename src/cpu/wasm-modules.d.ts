// `import m from "./x.wasm"` in the workerd bundle: the host gives a compiled module.
declare module "*.wasm" {
  const module: WebAssembly.Module;
  export default module;
}
