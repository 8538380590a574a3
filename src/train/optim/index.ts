import { AdamW } from './adamw.ts';
import { Lamb } from './lamb.ts';
import { Lion } from './lion.ts';
import { Sgd } from './sgd.ts';
import type { NamedParam, Optimizer, OptimizerHyper, OptimizerName } from './types.ts';

export type { NamedParam, Optimizer, OptimizerHyper, OptimizerName } from './types.ts';
export { OPTIMIZER_NAMES, OPTIMIZER_SLOTS } from './types.ts';
export { OptimizerStateError } from './base.ts';

export function createOptimizer(name: OptimizerName, params: readonly NamedParam[], hyper: OptimizerHyper): Optimizer {
  switch (name) {
    case 'lion':
      return new Lion(params, hyper);
    case 'adamw':
      return new AdamW(params, hyper);
    case 'lamb':
      return new Lamb(params, hyper);
    case 'sgd':
      return new Sgd(params, hyper);
  }
}
