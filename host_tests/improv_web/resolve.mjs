// improv-wifi-serial-sdk's dist imports "./util/hex-formatter" without ".js" (fine for bundlers, not
// for Node's ESM loader): add the extension to relative imports without one.
export async function resolve(specifier, context, next) {
  if (specifier.startsWith(".") && !/\.[cm]?js$/.test(specifier)) {
    try {
      return await next(specifier + ".js", context);
    } catch {
      // not a file with .js: resolve as written
    }
  }
  return next(specifier, context);
}
