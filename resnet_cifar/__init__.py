"""The supporting modules of resnet-cifar.

The suite's face stays at the top level: resnet_main.py (the command line),
resnet_model.py (the network) and cifar_input.py (the reader queues). Here:

  config       the frozen, typed RunConfig (no TensorFlow)
  resolve      flags and a run's saved settings -> RunConfig
  errors       the error classes and their exit statuses
  datasets     the dataset registry: each dataset's records, labels, paths, download (no TensorFlow)
  schedules    the learning-rate schedules, each kind's graph and Python rate side by side
  run_files    a run directory's files: config.json, records, scalars
  train_step   the training half of a ResNet: gradients, optimizer, moving averages, train op
  training, towers, staging, loss_scaling, summaries      the training loop
  evaluation, progress                                    the eval loop
  transfer, features                                      other runs' weights, bottleneck features
  checkpoints, guards                                     a run's checkpoints, locks and signals
  quiet, flag_help    a quiet start (no TensorFlow noise) and the grouped --help
"""
