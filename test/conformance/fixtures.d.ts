// esbuild's binary loader: a .safetensors import is the file's bytes.
declare module "*.safetensors" {
  const bytes: Uint8Array;
  export default bytes;
}
