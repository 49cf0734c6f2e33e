// Bundled by bench/support.mjs (esbuild) into the page's uppy.mjs: the peer the store
// benchmark measures, @uppy/core + @uppy/aws-s3 6.3.1, no UI.
export { default as Uppy } from "@uppy/core";
export { default as AwsS3 } from "@uppy/aws-s3";
